"""A first copy reproduces every kind of entry exactly: content, modes, times, links, odd names."""
from __future__ import annotations

import os
import socket
import stat
import subprocess
import sys

import pytest

from conftest import ODD_NAMES, every_case, link_groups, needs_root, snapshot, temp_files
from mirror import Options, copy_tree, sync_tree

def deep(levels: int) -> dict:
    return {"/".join(["d"] * levels) + "/leaf": b"deep"}


@pytest.mark.parametrize("jobs", [1, 4])
def test_first_copy_reproduces_every_case(make_tree, tmp_path, jobs):
    src = make_tree(every_case())
    dst = tmp_path / "dst"

    report = copy_tree(src, dst, Options(jobs=jobs))

    assert report.exit_code == 0, report.errors
    assert snapshot(dst) == snapshot(src)
    assert report.files_copied == 7 + len(ODD_NAMES)
    assert report.links_created == 4
    assert report.specials_created == 1
    assert temp_files(dst) == []


@pytest.fixture
def deep_tmp(tmp_path):
    yield tmp_path
    # pytest's own clean-up recurses and would fail on these trees
    subprocess.run(["rm", "-rf", str(tmp_path)], check=True)


def test_deeper_than_the_recursion_limit(make_tree, deep_tmp):
    levels = sys.getrecursionlimit() + 100
    src = make_tree(deep(levels))
    dst = deep_tmp / "dst"

    report = copy_tree(src, dst, Options(jobs=2))

    assert report.exit_code == 0, report.errors
    assert report.dirs_created == levels + 1  # and DST itself
    assert snapshot(dst) == snapshot(src)


def test_dst_root_takes_src_root_mode_and_mtime(make_tree, tmp_path):
    src = make_tree({"f": b"x"})
    os.chmod(src, 0o750)
    os.utime(src, ns=(1, 1_000_000_007))
    dst = tmp_path / "dst"
    dst.mkdir()

    copy_tree(src, dst, Options(jobs=1))

    assert stat.S_IMODE(os.stat(dst).st_mode) == 0o750
    assert os.stat(dst).st_mtime_ns == 1_000_000_007


def test_folder_times_are_set_after_their_contents(make_tree, tmp_path):
    spec = {f"d{i}/f{j}": b"x" * j for i in range(5) for j in range(60)}
    src = make_tree(spec)
    for i in range(5):
        os.utime(src / f"d{i}", ns=(0, 123_000_000_000 + i))

    copy_tree(src, tmp_path / "dst", Options(jobs=4))

    for i in range(5):
        assert os.stat(tmp_path / "dst" / f"d{i}").st_mtime_ns == 123_000_000_000 + i


def test_hard_links_are_kept_with_H(make_tree, tmp_path):
    src = make_tree({"a/one": b"shared", "b/unrelated": b"u"})
    os.link(src / "a/one", src / "a/two")
    os.link(src / "a/one", src / "b/three")
    dst = tmp_path / "dst"

    report = copy_tree(src, dst, Options(jobs=2, hard_links=True))

    assert report.exit_code == 0
    assert link_groups(dst) == {frozenset({b"a/one", b"a/two", b"b/three"})}
    assert report.files_copied == 2 and report.links_created == 2
    again = copy_tree(src, dst, Options(jobs=2, hard_links=True))
    assert (again.files_copied, again.links_created) == (0, 0)


def test_without_H_hard_links_become_separate_files(make_tree, tmp_path):
    src = make_tree({"one": b"shared"})
    os.link(src / "one", src / "two")

    copy_tree(src, tmp_path / "dst", Options(jobs=1))

    assert link_groups(tmp_path / "dst") == set()
    assert (tmp_path / "dst/two").read_bytes() == b"shared"


def test_sockets_are_skipped_with_a_warning(make_tree, tmp_path):
    src = make_tree({"f": b"x"})
    server = socket.socket(socket.AF_UNIX)
    server.bind(os.fsdecode(src / "sock"))
    try:
        report = copy_tree(src, tmp_path / "dst", Options(jobs=1))
    finally:
        server.close()

    assert report.exit_code == 0
    assert not (tmp_path / "dst/sock").exists()
    assert any("sock" in warning and "socket" in warning for warning in report.warnings)


@needs_root
def test_devices_and_owners_are_kept_as_root(make_tree, tmp_path):
    src = make_tree({"owned": b"x"})
    os.chown(src / "owned", 1234, 5678)
    os.mknod(src / "null", stat.S_IFCHR | 0o640, os.makedev(1, 3))

    report = copy_tree(src, tmp_path / "dst", Options(jobs=1))

    assert report.exit_code == 0
    assert snapshot(tmp_path / "dst") == snapshot(src)
    assert os.stat(tmp_path / "dst/owned").st_uid == 1234


def test_sync_round_trip_equals_copy(make_tree, tmp_path):
    src = make_tree(every_case())

    report = sync_tree(src, tmp_path / "dst", Options(jobs=2))

    assert report.exit_code == 0
    assert snapshot(tmp_path / "dst") == snapshot(src)
