"""Filters choose what is copied and protected; --dry-run changes nothing; check lists differences."""
from __future__ import annotations

import os

from conftest import File, Link, snapshot
from mirror import Options, check_tree, copy_tree, sync_tree

TREE = {"src/main.py": b"code", "src/main.o": b"obj", "build/out.bin": b"big",
        "keep.o": b"kept", "docs/a.md": b"doc", "logs/x.log": b"log"}


def names(root) -> set[str]:
    return {os.fsdecode(rel) for rel in snapshot(root, mtimes=False)} - {"."}


def test_exclude_and_include(make_tree, tmp_path):
    src = make_tree(TREE)

    copy_tree(src, tmp_path / "dst", Options(jobs=1, excludes=("*.o", "build/", "logs"), includes=("keep.o",)))

    assert names(tmp_path / "dst") == {"src", "src/main.py", "keep.o", "docs", "docs/a.md"}


def test_only_some_files_with_exclude_everything_then_include(make_tree, tmp_path):
    src = make_tree(TREE)

    copy_tree(src, tmp_path / "dst", Options(jobs=1, excludes=("*",), includes=("*/", "*.md")))

    assert names(tmp_path / "dst") == {"src", "build", "docs", "docs/a.md", "logs"}


def test_anchored_pattern_matches_from_src_only(make_tree, tmp_path):
    src = make_tree({"a.txt": b"top", "sub/a.txt": b"nested"})

    copy_tree(src, tmp_path / "dst", Options(jobs=1, excludes=("/a.txt",)))

    assert names(tmp_path / "dst") == {"sub", "sub/a.txt"}


def test_sync_keeps_excluded_files_in_dst(make_tree):
    src = make_tree({"a": b"1"})
    dst = make_tree({"a": b"1", "cache.tmp": b"local", "gone": b"g"})

    report = sync_tree(src, dst, Options(jobs=1, excludes=("*.tmp",)))

    assert names(dst) == {"a", "cache.tmp"}
    assert report.deleted == 1


def test_dry_run_changes_nothing_and_says_what_it_would_do(make_tree, tmp_path):
    src = make_tree({"new": b"n", "changed": b"new content", "dir/f": b"f"})
    dst = make_tree({"changed": b"old", "extra": b"e"})
    before_src, before_dst = snapshot(src), snapshot(dst)

    report = sync_tree(src, dst, Options(jobs=2, dry_run=True))

    assert snapshot(src) == before_src and snapshot(dst) == before_dst
    assert report.dry_run
    assert (report.files_copied, report.deleted, report.dirs_created) == (3, 1, 1)
    assert report.bytes_copied == len(b"n") + len(b"new content") + len(b"f")


def test_dry_run_into_a_missing_dst_creates_nothing(make_tree, tmp_path):
    src = make_tree({"a/b": b"x"})

    report = copy_tree(src, tmp_path / "dst", Options(dry_run=True))

    assert not (tmp_path / "dst").exists()
    assert report.files_copied == 1


def test_check_identical_trees(make_tree, tmp_path):
    src = make_tree({"a/b": b"x", "l": Link("a")})
    copy_tree(src, tmp_path / "dst", Options(jobs=1))

    report = check_tree(src, tmp_path / "dst")

    assert report.exit_code == 0 and report.differences == []


def test_check_markers(make_tree, tmp_path):
    src = make_tree({"only-src": b"1", "size": b"12", "mode": File(b"m", mode=0o600), "same": b"s",
                     "link": Link("a")})
    dst = tmp_path / "dst"
    copy_tree(src, dst, Options(jobs=1))
    (src / "size").write_bytes(b"123")
    (dst / "only-src").unlink()
    (dst / "only-dst").write_bytes(b"d")
    os.chmod(dst / "mode", 0o644)
    os.unlink(dst / "link")
    os.symlink("b", dst / "link")
    os.utime(dst, ns=(0, os.stat(src).st_mtime_ns))

    report = check_tree(src, dst)

    lines = sorted(str(d) for d in report.differences)
    assert lines == ["* link  (link target differs)", "* mode  (permissions differ)",
                     "* size  (size differs)", "+ only-src", "- only-dst"]
    assert report.exit_code == 1


def test_check_with_checksum_sees_content(make_tree):
    src = make_tree({"f": File(b"aaaa", mtime_ns=10**18)})
    dst = make_tree({"f": File(b"bbbb", mtime_ns=10**18)})
    os.utime(dst, ns=(0, os.stat(src).st_mtime_ns))

    assert check_tree(src, dst).exit_code == 0
    report = check_tree(src, dst, Options(checksum=True))
    assert [str(d) for d in report.differences] == ["* f  (checksum differs)"]
