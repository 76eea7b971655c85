"""Every rung of the byte-copying ladder gives the same bytes, whatever the size."""
from __future__ import annotations

import os

import pytest

from mirror.run.fastcopy import (BUFFER, BIG_FILE, PREALLOCATE_FS, Copier, copy_local, copy_loop, copy_range,
                                  copy_sendfile, filesystem_type)

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


def test_a_big_file_gets_its_blocks_before_its_bytes(tmp_path, monkeypatch):
    from mirror.run import fastcopy
    data = os.urandom(BIG_FILE + 5)
    (tmp_path / "src").write_bytes(data)
    reserved = []

    def copy_sendfile(src_fd, dst_fd, size, on_bytes):
        reserved.append(os.fstat(dst_fd).st_blocks * 512)  # before the first byte is written
        return real_copy(src_fd, dst_fd, size, on_bytes)
    real_copy = fastcopy.copy_sendfile
    monkeypatch.setattr(fastcopy, "copy_sendfile", copy_sendfile)
    with open(tmp_path / "src", "rb") as src, open(tmp_path / "dst", "wb") as dst:
        assert copy_local(src.fileno(), dst.fileno(), len(data), lambda n: None, reserve=True) == len(data)

    kind = filesystem_type(os.stat(tmp_path).st_dev)
    if kind not in ("ext4", "xfs", "btrfs", "tmpfs"):
        pytest.skip(f"{kind} may not preallocate")
    assert reserved[0] >= len(data)
    assert (tmp_path / "dst").read_bytes() == data


def test_a_big_file_that_shrank_keeps_no_preallocated_tail(tmp_path):
    (tmp_path / "src").write_bytes(b"s" * BIG_FILE)
    listed = BIG_FILE + (1 << 20)  # it was bigger when listed
    with open(tmp_path / "src", "rb") as src, open(tmp_path / "dst", "wb") as dst:
        assert copy_local(src.fileno(), dst.fileno(), listed, lambda n: None, reserve=True) == BIG_FILE
    assert (tmp_path / "dst").read_bytes() == b"s" * BIG_FILE


def test_big_files_are_preallocated_only_where_fallocate_writes_nothing(tmp_path):
    copier = Copier(os.fsencode(tmp_path))
    assert copier.reserve is (filesystem_type(os.stat(tmp_path).st_dev) in PREALLOCATE_FS)
    assert "vfat" not in PREALLOCATE_FS  # its fallocate writes every zero


def test_a_file_that_shrank_is_copied_short(tmp_path):
    (tmp_path / "src").write_bytes(b"abc")
    with open(tmp_path / "src", "rb") as src, open(tmp_path / "dst", "wb") as dst:
        assert Copier(os.fsencode(tmp_path))(src.fileno(), dst.fileno(), 100, lambda n: None) == 3


def test_the_filesystem_of_this_tree_is_known(tmp_path):
    assert filesystem_type(os.stat(tmp_path).st_dev) != "unknown"
