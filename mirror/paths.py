"""Descriptor-relative path helpers: relative paths are bytes, joined with b"/", never followed."""
from __future__ import annotations

import os

DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
# Opening each component with O_NOFOLLOW means a symlink planted inside a tree (or a folder
# swapped for one during the run) makes the open fail instead of leading outside the tree.
COMPONENT_FLAGS = DIR_FLAGS | os.O_NOFOLLOW


def join(rel: bytes, name: bytes) -> bytes:
    return rel + b"/" + name if rel else name


def split(rel: bytes) -> tuple[bytes, bytes]:
    """(parent, name) of a relative path; the parent of a top-level name is b""."""
    head, _, tail = rel.rpartition(b"/")
    return head, tail


def depth(rel: bytes) -> int:
    return rel.count(b"/") + 1 if rel else 0


def open_dir(root: bytes, rel: bytes) -> int:
    """Open folder `rel` below `root` one component at a time, refusing symlinks on the way.

    The root itself is opened as named (a user may name a symlink to a folder), which also
    makes paths longer than PATH_MAX reachable.
    """
    fd = os.open(root, DIR_FLAGS)
    if not rel:
        return fd
    try:
        for part in rel.split(b"/"):
            parent, fd = fd, -1
            try:
                fd = os.open(part, COMPONENT_FLAGS, dir_fd=parent)
            finally:
                os.close(parent)
    except OSError as error:
        if fd >= 0:
            os.close(fd)
        raise OSError(error.errno, error.strerror, os.path.join(root, rel)) from None
    return fd


class DirCache:
    """Keeps the most recently opened folder open: a batch mostly touches one folder."""

    def __init__(self, root: bytes) -> None:
        self.root = root
        self.rel: bytes | None = None
        self.fd = -1

    def get(self, rel: bytes) -> int:
        if rel != self.rel:
            self.close()
            self.fd = open_dir(self.root, rel)
            self.rel = rel
        return self.fd

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
        self.fd, self.rel = -1, None


TEMP_PREFIX = b".mirror-tmp-"
_TEMP_LENGTH = len(TEMP_PREFIX) + 16


def temp_name() -> bytes:
    """A fresh hidden name for a file being written; short, so any final name fits beside it."""
    return TEMP_PREFIX + os.urandom(8).hex().encode()


def is_temp_name(name: bytes) -> bool:
    """True for names made by temp_name(): what a killed run may leave behind."""
    if len(name) != _TEMP_LENGTH or not name.startswith(TEMP_PREFIX):
        return False
    try:
        int(name[len(TEMP_PREFIX):], 16)
    except ValueError:
        return False
    return True
