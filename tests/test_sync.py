"""sync deletes what SRC lacks, but never after an error, never past --max-delete."""
from __future__ import annotations

import errno
import os

import pytest

from conftest import Dir, Link, file_size_limit, snapshot, temp_files
from mirror import Options, copy_tree, sync_tree

ONE_JOB = Options(jobs=1)


def test_sync_deletes_extras_and_counts_every_entry(make_tree):
    src = make_tree({"keep": b"k"})
    dst = make_tree({"keep": b"k", "gone.txt": b"g", "old/a/b": b"1", "old/c": b"2",
                     "dangling": Link("/nonexistent"), "empty": Dir()})

    report = sync_tree(src, dst, ONE_JOB)

    assert report.exit_code == 0
    assert sorted(os.listdir(dst)) == ["keep"]
    assert report.deleted == 1 + 4 + 1 + 1
    assert snapshot(dst) == snapshot(src)


def test_copy_never_deletes(make_tree):
    src = make_tree({"keep": b"k"})
    dst = make_tree({"extra/file": b"e"})

    report = copy_tree(src, dst, ONE_JOB)

    assert report.deleted == 0
    assert (dst / "extra/file").read_bytes() == b"e"


def test_deleting_a_link_removes_the_link_not_its_target(make_tree, tmp_path):
    outside = make_tree({"precious": b"p"})
    src = make_tree({"f": b"x"})
    dst = make_tree({"f": b"x", "link-to-dir": Link(str(outside)), "link-to-file": Link(str(outside / "precious"))})

    sync_tree(src, dst, ONE_JOB)

    assert not os.path.lexists(dst / "link-to-dir")
    assert (outside / "precious").read_bytes() == b"p"


def test_max_delete_blocks_all_deletions_but_copies(make_tree):
    src = make_tree({"new": b"n"})
    dst = make_tree({"a": b"1", "b": b"2", "c": b"3"})

    report = sync_tree(src, dst, Options(jobs=1, max_delete=2))

    assert report.exit_code == 1
    assert report.deleted == 0 and sorted(os.listdir(dst)) == ["a", "b", "c", "new"]
    assert "max-delete" in report.deletions_skipped


def test_max_delete_allows_up_to_the_limit(make_tree):
    src = make_tree({"new": b"n"})
    dst = make_tree({"a": b"1", "b": b"2"})

    report = sync_tree(src, dst, Options(jobs=1, max_delete=2))

    assert report.exit_code == 0 and report.deleted == 2


@pytest.mark.parametrize("jobs", [1, 3])
def test_no_deletions_after_an_error(make_tree, jobs):
    src = make_tree({"small": b"fine", "big": b"x" * (2 << 20)})
    dst = make_tree({"extra": b"keep me"})

    with file_size_limit(1 << 20):  # writing "big" fails with EFBIG, as a full disk would
        report = sync_tree(src, dst, Options(jobs=jobs))

    assert report.exit_code == 1 and report.files_failed == 1
    assert report.errors[0].path == b"big" and report.errors[0].error.errno == errno.EFBIG
    assert (dst / "small").read_bytes() == b"fine"
    assert (dst / "extra").read_bytes() == b"keep me"
    assert report.deleted == 0 and "because of errors" in report.deletions_skipped
    assert temp_files(dst) == []
