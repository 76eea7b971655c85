"""Every rung of the byte-copying ladder gives the same bytes, whatever the size."""
from __future__ import annotations

import os

import pytest

from mirror.run.fastcopy import (BUFFER, Copier, copy_local, copy_loop, copy_range, copy_sendfile,
                                  filesystem_type)

SIZES = [0, 1, 4095, BUFFER, BUFFER + 1, 3 * BUFFER + 17, (9 << 20) + 5]


@pytest.mark.parametrize("method", [copy_local, copy_loop, copy_range, copy_sendfile])
@pytest.mark.parametrize("size", SIZES)
def test_each_method_copies_exactly(tmp_path, method, size):
    data = os.urandom(size)
    (tmp_path / "src").write_bytes(data)
    progress = []
    with open(tmp_path / "src", "rb") as src, open(tmp_path / "dst", "wb") as dst:
        copied = method(src.fileno(), dst.fileno(), size, progress.append)

    assert copied == size
    # Progress comes during long copies; one read and one write are counted by the caller.
    assert sum(progress) == (0 if method is copy_local and size <= BUFFER else size)
    assert (tmp_path / "dst").read_bytes() == data


def test_a_file_that_shrank_is_copied_short(tmp_path):
    (tmp_path / "src").write_bytes(b"abc")
    with open(tmp_path / "src", "rb") as src, open(tmp_path / "dst", "wb") as dst:
        assert Copier(os.fsencode(tmp_path))(src.fileno(), dst.fileno(), 100, lambda n: None) == 3


def test_the_filesystem_of_this_tree_is_known(tmp_path):
    assert filesystem_type(os.stat(tmp_path).st_dev) != "unknown"
