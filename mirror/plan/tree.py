"""Reading a tree: the SourceTree protocol, and LocalTree, which reads a local folder by descriptors."""
from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable, Iterable
from typing import Any, Protocol, Union

from ..model import Entry, Kind, SourceError
from ..paths import DirCache, split
from .scan import entry, entry_from_stat, list_folder, stat_root

READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
# An O_PATH descriptor pins an inode without opening it (no read permission needed, a FIFO does
# not block, a device is not touched); with O_NOFOLLOW a symlink is pinned, not its target.
PIN_FLAGS = getattr(os, "O_PATH", os.O_RDONLY | os.O_NONBLOCK) | os.O_NOFOLLOW | os.O_CLOEXEC
Source = Any   # an opened file: a descriptor (LocalTree), or what a tree's `open` gives
# (source, DST's descriptor, bytes expected, progress callback) -> bytes copied
CopyBytes = Callable[[Source, int, int, Callable[[int], None]], int]


class Stat(Protocol):
    """What a listing gives for each name: the fields of an lstat result that mirror reads."""

    st_mode: int
    st_size: int
    st_mtime_ns: int
    st_ctime_ns: int
    st_atime_ns: int
    st_uid: int
    st_gid: int
    st_ino: int
    st_dev: int
    st_nlink: int
    st_rdev: int


class SourceTree(Protocol):
    """What planning and copying read of a tree; paths are relative bytes, b"/"-separated.

    Planner, Applier and FileCopier read SRC only through this, so a tree that is not local
    (a `mirror serve` on another machine, a test's tree in memory) plugs in here. DST is read
    and written through LocalTree and descriptors: it is always local.
    """

    path: bytes  # where the tree is, for messages
    round_trips: bool  # each read waits on a network (a remote tree): fewer, bigger tasks

    def root(self) -> Entry:
        """The tree's root folder (a symlink the user named as the root is followed)."""

    def list(self, rel: bytes) -> dict[bytes, Stat]:
        """Every entry of folder `rel` with its lstat, by name; OSError if it cannot be read."""

    def entry(self, rel: bytes, name: bytes, st: Stat) -> Entry | None:
        """The Entry of a listed name, with a link's target; None if it vanished since."""

    def open(self, path: bytes, listed: Entry | None) -> tuple[Source, Entry]:
        """The regular file at `path`, opened (a local tree's descriptor, so that
        copy_file_range and sendfile work), and what was opened: `listed` as given, or,
        without it, the file as it is now. Raises SourceError."""

    def copier(self, local: CopyBytes) -> CopyBytes:
        """What moves an opened file's bytes into DST's descriptor: `local` (the fastest way
        between two descriptors) where `open` gives descriptors, the tree's own otherwise."""

    def release(self, source: Source) -> None:
        """Close a file `open` gave."""

    def is_regular(self, source: Source) -> bool:
        """The opened file is still a regular file (asked when reading it failed)."""

    def unchanged(self, source: Source, before: Entry) -> bool:
        """The opened file is still as `before` says (size, mtime, ctime), after its copy."""

    def prefetch(self, folders: Iterable[bytes] = (), files: Iterable[Entry] = ()) -> None:
        """What will be read next, in order: the listings of `folders`, then `files` (a
        remote tree asks for them all at once; a local one has nothing to do)."""

    def digest(self, path: bytes) -> bytes:
        """The xxh3-128 digest of the regular file at `path` (--checksum)."""

    def close(self) -> None:
        """Release what the tree holds open; it opens again when asked."""


def unchanged(before: Entry, after: os.stat_result) -> bool:
    # ctime too: it moves with every write, chmod and chown, even when mtime is put back
    return (before.size, before.mtime_ns, before.ctime_ns) == (
        after.st_size, after.st_mtime_ns, after.st_ctime_ns) and stat.S_ISREG(after.st_mode)


class LocalTree:
    """A local folder, read relative to descriptors: every folder is opened one component at a
    time with O_NOFOLLOW, every file with O_NOFOLLOW from its folder's descriptor, so a link
    planted in the tree (or a folder swapped for one mid-run) never leads outside it.
    Picklable: a copy in another process opens its own descriptors."""

    def __init__(self, path: bytes) -> None:
        self.path = path
        self.folders = DirCache(path)

    round_trips = False

    def __reduce__(self):
        return LocalTree, (self.path,)

    def root(self) -> Entry:
        return stat_root(self.path)

    def list(self, rel: bytes) -> dict[bytes, os.stat_result]:
        return list_folder(self.folders, rel)

    def entry(self, rel: bytes, name: bytes, st: os.stat_result) -> Entry | None:
        return entry(self.folders, rel, name, st)

    def folder(self, rel: bytes) -> int:
        """The descriptor of folder `rel` (DST's writes and the -H link cache use it)."""
        return self.folders.get(rel)

    def open(self, path: bytes, listed: Entry | None) -> tuple[int, Entry]:
        parent, name = split(path)
        try:
            fd = os.open(name, READ_FLAGS, dir_fd=self.folders.get(parent))
        except OSError as error:
            raise SourceError(error.errno, error.strerror, path) from None
        if listed is not None:  # the listing's lstat: no fstat now (a round trip on NFS)
            return fd, listed
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            os.close(fd)
            raise SourceError(errno.EINVAL, "no longer a regular file", path)
        return fd, entry_from_stat(path, st)

    def copier(self, local: CopyBytes) -> CopyBytes:
        return local

    release = staticmethod(os.close)

    def is_regular(self, fd: int) -> bool:
        return stat.S_ISREG(os.fstat(fd).st_mode)

    def unchanged(self, fd: int, before: Entry) -> bool:
        return unchanged(before, os.fstat(fd))

    def digest(self, path: bytes) -> bytes:
        from .checksum import file_digest  # xxhash only when --checksum asks for it
        return file_digest(self.folders, path)

    def xattrs(self, path: bytes, kind: Kind, scope) -> dict[str, bytes]:
        """The extended attributes in `scope` of the entry at `path` (-X, -A), read through
        its folder's descriptor: a link's own (never its target's), anything else's through
        an O_PATH descriptor of its inode (no device is opened, no FIFO blocks)."""
        from .. import xattrs
        parent, name = split(path)
        dir_fd = self.folders.get(parent)
        if kind is Kind.SYMLINK:
            return xattrs.read(b"/proc/self/fd/%d/%s" % (dir_fd, name), scope, follow=False)
        fd = os.open(name or b".", PIN_FLAGS, dir_fd=dir_fd)
        try:
            return xattrs.read(b"/proc/self/fd/%d" % fd, scope)
        finally:
            os.close(fd)

    def prefetch(self, folders: Iterable[bytes] = (), files: Iterable[Entry] = ()) -> None:
        pass

    def close(self) -> None:
        self.folders.close()


def as_tree(tree: Union[SourceTree, str, bytes]) -> SourceTree:
    """A tree as given, or the LocalTree of a path."""
    return LocalTree(os.fsencode(tree)) if isinstance(tree, (str, bytes, os.PathLike)) else tree
