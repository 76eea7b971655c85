"""Second runs: unchanged entries are skipped, changes are found and carried over, with reasons."""
from __future__ import annotations

import os
import stat

from conftest import Dir, File, Link, snapshot
from mirror import Options, copy_tree, sync_tree
from mirror.events import Finished

ONE_JOB = Options(jobs=1)


def copied_paths(events) -> dict[bytes, str]:
    return {e.path: e.reason.value
            for e in events if isinstance(e, Finished) and e.op.value == "copy"}


def test_second_run_copies_nothing(make_tree, tmp_path):
    src = make_tree({"a/b.txt": b"hi", "c": b"x" * 5000, "l": Link("c"), "d": Dir()})
    dst = tmp_path / "dst"
    copy_tree(src, dst, ONE_JOB)
    before = snapshot(dst)

    again = copy_tree(src, dst, Options(jobs=2))

    assert (again.files_copied, again.files_skipped, again.links_created, again.dirs_created) == (0, 2, 0, 0)
    assert snapshot(dst) == before


def test_changes_are_found_with_their_reason(make_tree, tmp_path):
    src = make_tree({"same": b"same", "grown": b"1", "touched": b"t", "fresh/new": b"n"})
    dst = tmp_path / "dst"
    copy_tree(src, dst, ONE_JOB)
    (src / "grown").write_bytes(b"1234")
    os.utime(src / "touched", ns=(0, 5_000_000_000))
    (src / "fresh/another").write_bytes(b"a")
    events = []

    report = copy_tree(src, dst, ONE_JOB, on_event=events.append)

    assert copied_paths(events) == {b"grown": "size differs", b"touched": "mtime differs",
                                    b"fresh/another": "missing"}
    assert report.files_skipped == 2
    assert snapshot(dst) == snapshot(src)


def test_checksum_catches_same_size_same_mtime_change(make_tree, tmp_path):
    src = make_tree({"f": File(b"aaaa", mtime_ns=10**18)})
    dst = make_tree({"f": File(b"bbbb", mtime_ns=10**18)})

    quick = copy_tree(src, dst, ONE_JOB)
    assert quick.files_copied == 0 and (dst / "f").read_bytes() == b"bbbb"

    events = []
    thorough = copy_tree(src, dst, Options(jobs=1, checksum=True), on_event=events.append)

    assert thorough.files_copied == 1
    assert copied_paths(events) == {b"f": "checksum differs"}
    assert (dst / "f").read_bytes() == b"aaaa"


def test_checksum_equal_content_only_fixes_the_mtime(make_tree, tmp_path):
    src = make_tree({"f": File(b"same", mtime_ns=2 * 10**18)})
    dst = make_tree({"f": File(b"same", mtime_ns=10**18)})
    inode = os.stat(dst / "f").st_ino

    report = copy_tree(src, dst, Options(jobs=1, checksum=True))

    assert (report.files_copied, report.metadata_updated) == (0, 1)
    assert os.stat(dst / "f").st_ino == inode
    assert os.stat(dst / "f").st_mtime_ns == 2 * 10**18


def test_permission_change_updates_metadata_without_copying(make_tree, tmp_path):
    src = make_tree({"f": b"data"})
    dst = tmp_path / "dst"
    copy_tree(src, dst, ONE_JOB)
    os.chmod(src / "f", 0o640)
    inode = os.stat(dst / "f").st_ino

    report = copy_tree(src, dst, ONE_JOB)

    assert (report.files_copied, report.metadata_updated) == (0, 1)
    assert stat.S_IMODE(os.stat(dst / "f").st_mode) == 0o640
    assert os.stat(dst / "f").st_ino == inode


def test_file_replaces_folder_link_and_back(make_tree, tmp_path):
    src = make_tree({"was-dir": b"now a file", "was-file/inner": b"now a folder",
                     "was-link/x": b"folder", "now-link": Link("was-dir")})
    dst = make_tree({"was-dir/": Dir(), "was-file": b"file", "was-link": Link("/tmp"),
                     "now-link": b"a file"})

    report = copy_tree(src, dst, ONE_JOB)

    assert report.exit_code == 0, report.errors
    assert snapshot(dst) == snapshot(src)
    assert os.path.isdir("/tmp"), "the old link's target is untouched"


def test_copy_refuses_to_replace_a_non_empty_folder(make_tree):
    src = make_tree({"x": b"a file"})
    dst = make_tree({"x/keep": b"precious"})

    report = copy_tree(src, dst, ONE_JOB)

    assert report.exit_code == 1 and report.files_failed == 1
    assert (dst / "x/keep").read_bytes() == b"precious"
    assert "non-empty folder" in report.errors[0].message


def test_sync_replaces_a_non_empty_folder(make_tree):
    src = make_tree({"x": b"a file"})
    dst = make_tree({"x/a/b": b"1", "x/c": b"2"})

    report = sync_tree(src, dst, ONE_JOB)

    assert report.exit_code == 0, report.errors
    assert (dst / "x").read_bytes() == b"a file"
    assert report.deleted == 4


def test_stale_temporary_files_are_removed(make_tree):
    src = make_tree({"a/f": b"x"})
    dst = make_tree({"a/f": b"x", "a/.mirror-tmp-0123456789abcdef": b"half", ".mirror-tmp-aaaaaaaaaaaaaaaa": b""})
    os.utime(dst / "a/f", ns=(0, os.stat(src / "a/f").st_mtime_ns))

    report = copy_tree(src, dst, ONE_JOB)

    assert report.temp_files_removed == 2
    assert sorted(os.listdir(dst / "a")) == ["f"]
    assert sorted(os.listdir(dst)) == ["a"]
