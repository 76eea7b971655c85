"""The compiled listing of a folder pair answers as scan's pure functions, and plans local trees."""
from __future__ import annotations

import os
import shutil
import socket
import tempfile

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import ROOT
from mirror import InlineEngine, Options, copy_tree, core
from mirror.plan import scan

pytestmark = pytest.mark.skipif(core.copy_files is None, reason=f"the pure core runs: {core.WHY}")
FIELDS = ("st_mode", "st_ino", "st_dev", "st_nlink", "st_uid", "st_gid", "st_size", "st_atime_ns",
          "st_mtime_ns", "st_ctime_ns", "st_rdev")
NAMES = st.sampled_from([b"a", b"b", b"c d", b"\xff", b"n" * 255, b".h", b"\n"])
KINDS = st.sampled_from(["file", "file", "file", "dir", "link", "fifo", "socket"])
# (kind, size, mtime, mode, uid): two sides drawn from few values often agree
FACTS = st.tuples(KINDS, st.integers(0, 3), st.integers(1, 3), st.sampled_from([0o644, 0o600]),
                  st.sampled_from([0, 1] if ROOT else [os.getuid()]))  # "uid" edits need root
SIDES = st.dictionaries(NAMES, FACTS, max_size=7)
EDIT = st.sampled_from(["same", "same", "kind", "size", "mtime", "mode", "uid", "gone"])


def edited(side: dict, edits: list, extra: dict) -> dict:
    """DST's side: each of SRC's entries as it is (the quick check drops it), with one fact
    changed, or gone, by `edits` in name order; and `extra`, names SRC may lack."""
    other = {}
    for (name, (kind, size, mtime, mode, uid)), edit in zip(sorted(side.items()), edits):
        if edit != "gone":
            other[name] = {"same": (kind, size, mtime, mode, uid),
                           "kind": ("dir" if kind == "file" else "file", size, mtime, mode, uid),
                           "size": (kind, size + 1, mtime, mode, uid),
                           "mtime": (kind, size, mtime + 1, mode, uid),
                           "mode": (kind, size, mtime, mode ^ 0o044, uid),
                           "uid": (kind, size, mtime, mode, 1 - uid)}[edit]
    return {**extra, **other}


def make(folder: bytes, side: dict) -> None:
    os.mkdir(folder)
    for name, (kind, size, mtime, mode, uid) in side.items():
        path = os.path.join(folder, name)
        if kind == "file":
            with open(path, "wb") as out:
                out.write(b"x" * size)
            if ROOT:
                os.chown(path, uid, uid)
            os.chmod(path, mode)
            os.utime(path, ns=(mtime * 10**9 + 7, mtime * 10**9))  # an atime of its own
        elif kind == "dir":
            os.mkdir(path)
        elif kind == "link":
            os.symlink(b"a", path)
        elif kind == "fifo":
            os.mkfifo(path)
        else:
            with socket.socket(socket.AF_UNIX) as unix:  # bound by a short name: 108 bytes at most
                unix.bind(os.path.join(folder, b"s"))
            os.rename(os.path.join(folder, b"s"), path)


def plain(listed) -> tuple:
    """A listing's answer with every stat as a tuple of its fields, names sorted."""
    if len(listed) == 2:  # names alone
        return sorted(listed[0]), sorted(listed[1])
    unchanged, src, dst = listed
    return unchanged, *({name: tuple(getattr(st, field) for field in FIELDS)
                         for name, st in sorted(side.items())} for side in (src, dst))


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(src=SIDES, edits=st.lists(EDIT, min_size=7, max_size=7), extra=SIDES,
       dst_there=st.sampled_from([True, True, False]), owner=st.sampled_from([None, True, False]),
       most=st.sampled_from([None, None, 3, 100]), asked=st.lists(NAMES, max_size=6, unique=True))
def test_the_compiled_listing_answers_as_the_pure_one(src, edits, extra, dst_there, owner, most, asked):
    root = os.fsencode(tempfile.mkdtemp(prefix="mirror-list-"))
    try:
        make(os.path.join(root, b"src"), src)
        make(os.path.join(root, b"dst"), edited(src, edits, extra))
        src_fd = os.open(os.path.join(root, b"src"), os.O_RDONLY)
        dst_fd = os.open(os.path.join(root, b"dst"), os.O_RDONLY) if dst_there else -1
        try:
            for repeat in range(2):  # the descriptors are left where the next listing starts
                assert plain(core.list_pair(src_fd, dst_fd, owner, most)) == plain(
                    scan.list_pair(src_fd, dst_fd, owner, most))
            src_names, dst_names = asked, asked[::-1] if dst_there else []  # some gone, some never there
            assert plain(core.stat_pair(src_fd, dst_fd, src_names, dst_names, owner)) == plain(
                scan.stat_pair(src_fd, dst_fd, src_names, dst_names, owner))
        finally:
            os.close(src_fd)
            if dst_fd >= 0:
                os.close(dst_fd)
    finally:
        shutil.rmtree(root)


def test_errors_are_the_pure_ones(tmp_path):
    (tmp_path / "file").write_bytes(b"x")
    file_fd = os.open(tmp_path / "file", os.O_RDONLY)
    try:
        for listing in (core.list_pair, scan.list_pair):
            with pytest.raises(NotADirectoryError):
                listing(file_fd, -1, True)
            with pytest.raises(OSError) as bad:
                listing(10**6, -1, True)
            assert bad.value.errno == 9  # EBADF
    finally:
        os.close(file_fd)


def test_a_slow_store_is_listed_by_the_pure_code_with_threads(make_tree, monkeypatch):
    src = make_tree({f"f{i}": b"x" for i in range(10)})
    threaded = []
    real = scan.add_slow_lstats

    def add_slow_lstats(listing, dir_fd, names):
        threaded.append(len(names))
        real(listing, dir_fd, names)
    monkeypatch.setattr(scan, "add_slow_lstats", add_slow_lstats)
    monkeypatch.setattr(scan, "SLOW_STAT_S", 0)  # every store is slow
    fd = os.open(src, os.O_RDONLY)
    try:
        assert core._compiled.list_pair(fd, -1, True, -1, core.slow_ns()) is None  # declined
        unchanged, listing, _ = core.list_pair(fd, -1, True)
        assert threaded == [6] and sorted(listing) == sorted(b"f%d" % i for i in range(10))
        names = sorted(listing)
        assert core._compiled.stat_pair(fd, -1, names, [], True, core.slow_ns()) is None
        assert sorted(core.stat_pair(fd, -1, names, [], True)[1]) == names and threaded == [6, 6]
    finally:
        os.close(fd)


def test_local_trees_are_planned_by_the_compiled_listing(make_tree, tmp_path, monkeypatch):
    src = make_tree({f"{folder}/f{i}": b"x" * i for folder in "abc" for i in range(20)})
    dst = tmp_path / "dst"
    copy_tree(src, dst, Options(jobs=1), engine=InlineEngine)
    answers = []
    real = core._compiled.list_pair

    def list_pair(*args):
        listed = real(*args)
        answers.append((listed[0], len(listed[1]), len(listed[2])))  # the planner pops from them
        return listed
    monkeypatch.setattr(core._compiled, "list_pair", list_pair)

    report = copy_tree(src, dst, Options(jobs=1), engine=InlineEngine)

    assert report.files_skipped == 60
    # the root's three folders, then three folders of unchanged files: no object for any
    assert sorted(answers) == [(0, 3, 3), (20, 0, 0), (20, 0, 0), (20, 0, 0)]


def test_a_big_folder_s_names_come_sorted_so_that_cutting_them_costs_no_sort_in_python(make_tree):
    names = [b"%05d" % number for number in range(0, 3000, 7)]
    root = make_tree({**{name.decode(): b"" for name in names[::-1]}, os.fsdecode(b"\xff"): b"", "a": b""})
    fd = os.open(root, os.O_RDONLY)
    try:
        src_names, dst_names = core.list_pair(fd, fd, True, 10)
    finally:
        os.close(fd)

    assert src_names == sorted(names + [b"\xff", b"a"]) == dst_names
