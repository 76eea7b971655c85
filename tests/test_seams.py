"""The seams: a SRC that is not a local folder is copied by the unchanged planner and applier."""
from __future__ import annotations

import os
import stat
from typing import NamedTuple

import xxhash

from mirror import Options, check_tree, copy_tree, sync_tree
from mirror.model import Entry, SourceError
from mirror.plan.scan import entry_from_stat
from conftest import build, snapshot

MTIME = 1_700_000_000_123_456_789


class FakeStat(NamedTuple):
    st_mode: int
    st_size: int
    st_mtime_ns: int = MTIME
    st_ctime_ns: int = MTIME
    st_atime_ns: int = MTIME
    st_uid: int = os.geteuid()
    st_gid: int = os.getegid()
    st_ino: int = 0
    st_dev: int = 0
    st_nlink: int = 1
    st_rdev: int = 0


class MemoryTree:
    """A SourceTree held in a dict {path: bytes (a file) | None (a folder) | str (a link's
    target)}; a file is opened as an anonymous memory file, so the copier reads a real fd."""

    path = b"memory:"

    def __init__(self, spec: dict[str, bytes | str | None]) -> None:
        self.items = {os.fsencode(path): value for path, value in spec.items()}
        for path in list(self.items):  # the folders on the way are folders too
            while b"/" in path:
                path = path.rpartition(b"/")[0]
                self.items[path] = None
        self.items[b""] = None
        self.opened = 0

    def stat(self, path: bytes) -> FakeStat:
        value = self.items[path]
        if value is None:
            return FakeStat(stat.S_IFDIR | 0o755, 0, st_ino=hash(path) & 0xFFFF)
        if isinstance(value, str):
            return FakeStat(stat.S_IFLNK | 0o777, len(value), st_ino=hash(path) & 0xFFFF)
        return FakeStat(stat.S_IFREG | 0o640, len(value), st_ino=hash(path) & 0xFFFF)

    def root(self) -> Entry:
        return entry_from_stat(b"", self.stat(b""))

    def list(self, rel: bytes) -> dict[bytes, FakeStat]:
        if self.items.get(rel, b"") is not None:
            raise NotADirectoryError(20, "not a folder", rel)
        prefix = rel + b"/" if rel else b""
        return {path[len(prefix):]: self.stat(path) for path in self.items
                if path and path.startswith(prefix) and b"/" not in path[len(prefix):]}

    def entry(self, rel: bytes, name: bytes, st: FakeStat) -> Entry | None:
        path = rel + b"/" + name if rel else name
        value = self.items.get(path, b"")
        return entry_from_stat(path, st, os.fsencode(value) if isinstance(value, str) else None)

    def open(self, path: bytes, listed: Entry | None) -> tuple[int, Entry]:
        data = self.items.get(path)
        if not isinstance(data, bytes):
            raise SourceError(2, "no such file", path)
        fd = os.memfd_create("memory-tree")
        os.write(fd, data)
        os.lseek(fd, 0, os.SEEK_SET)
        self.opened += 1
        return fd, listed or entry_from_stat(path, self.stat(path))

    def copier(self, local):
        return local  # a real descriptor: DST's own way of copying

    release = staticmethod(os.close)

    def is_regular(self, fd: int) -> bool:
        return True

    def unchanged(self, fd: int, before: Entry) -> bool:
        return True

    def prefetch(self, folders=(), files=()) -> None:
        pass

    def digest(self, path: bytes) -> bytes:
        return xxhash.xxh3_128(self.items[path]).digest()

    def close(self) -> None:
        pass


SPEC = {"a/b.txt": b"hello", "a/deep/c": b"x" * 70_000, "empty": None, "link": "a/b.txt",
        "top": b"top file", "big": os.urandom(17 << 20)}


def test_a_tree_in_memory_is_copied_by_the_planner_and_applier(tmp_path):
    dst = tmp_path / "dst"

    report = sync_tree(MemoryTree(SPEC), dst, Options(jobs=2))

    assert report.exit_code == 0, report.errors
    assert (report.files_copied, report.links_created) == (4, 1)
    for path, value in SPEC.items():
        target = dst / path
        if value is None:
            assert target.is_dir()
        elif isinstance(value, str):
            assert os.readlink(target) == value
        else:
            assert target.read_bytes() == value
            assert stat.S_IMODE(target.stat().st_mode) == 0o640 and target.stat().st_mtime_ns == MTIME
    again = sync_tree(MemoryTree(SPEC), dst, Options(jobs=2))
    assert (again.files_copied, again.files_skipped) == (0, 4)
    assert check_tree(MemoryTree(SPEC), dst, Options(checksum=True)).differences == []


def test_a_tree_in_memory_syncs_deletions_and_changes(tmp_path):
    dst = build(tmp_path / "dst", {"a/b.txt": b"old", "stale/x": b"x", "top": b"top file"})
    os.utime(dst + b"/top", ns=(MTIME, MTIME))
    os.chmod(dst + b"/top", 0o640)

    report = sync_tree(MemoryTree(SPEC), dst, Options(jobs=2))

    assert report.exit_code == 0, report.errors
    assert report.deleted == 2 and report.files_copied == 3 and report.files_skipped == 1
    assert set(snapshot(dst)) == {b".", b"a", b"a/b.txt", b"a/deep", b"a/deep/c", b"empty", b"link",
                                  b"top", b"big"}


def test_copy_tree_takes_a_tree_as_source_and_refuses_one_that_is_not_a_folder(tmp_path):
    import pytest

    from mirror import MirrorError

    class FileTree(MemoryTree):
        def root(self):
            return entry_from_stat(b"", FakeStat(stat.S_IFREG | 0o644, 1))

    with pytest.raises(MirrorError, match="memory: is not a folder"):
        copy_tree(FileTree({}), tmp_path / "dst")
    assert not (tmp_path / "dst").exists()


def test_a_worker_that_cannot_be_built_ends_the_run_instead_of_being_restarted_for_ever(tmp_path):
    import pytest

    class BrokenTree(MemoryTree):
        def copier(self, local):
            raise RuntimeError("this tree cannot copy")

    with pytest.raises(RuntimeError, match="this tree cannot copy"):
        copy_tree(BrokenTree(SPEC), tmp_path / "dst", Options(jobs=2))
