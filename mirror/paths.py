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


class DirCache:
    """Keeps the chain of folders leading to the last one asked for open.

    A walk or a batch mostly moves to a child or a sibling of the last folder, which then costs
    one openat instead of one per component; a deep tree stays linear.
    """

    def __init__(self, root: bytes) -> None:
        self.root = root
        self.root_fd = -1
        self.parts: list[bytes] = []
        self.fds: list[int] = []
        self.last: bytes | None = None

    def get(self, rel: bytes) -> int:
        if rel == self.last and self.root_fd >= 0:
            return self.fds[-1] if self.fds else self.root_fd  # most calls: the same folder again
        if self.root_fd < 0:
            self.root_fd = os.open(self.root, DIR_FLAGS)
        self.last = None
        parts = rel.split(b"/") if rel else []
        common = 0
        for mine, wanted in zip(self.parts, parts):
            if mine != wanted:
                break
            common += 1
        while len(self.fds) > common:
            os.close(self.fds.pop())
            self.parts.pop()
        for part in parts[common:]:
            parent = self.fds[-1] if self.fds else self.root_fd
            try:
                fd = os.open(part, COMPONENT_FLAGS, dir_fd=parent)
            except OSError as error:
                raise OSError(error.errno, error.strerror, os.path.join(self.root, rel)) from None
            self.fds.append(fd)
            self.parts.append(part)
        self.last = rel
        return self.fds[-1] if self.fds else self.root_fd

    def close(self) -> None:
        for fd in self.fds:
            os.close(fd)
        if self.root_fd >= 0:
            os.close(self.root_fd)
        self.root_fd, self.parts, self.fds, self.last = -1, [], [], None


TEMP_PREFIX = b".mirror-tmp-"
_TEMP_LENGTH = len(TEMP_PREFIX) + 16
_HEX = b"0123456789abcdef"


def temp_name() -> bytes:
    """A fresh hidden name for a file being written; short, so any final name fits beside it."""
    return TEMP_PREFIX + os.urandom(8).hex().encode()


def is_temp_name(name: bytes) -> bool:
    """True for names made by temp_name(): what a killed run may leave behind."""
    # Exactly 16 lowercase hex digits: int(..., 16) would also take "0x", signs, spaces and
    # underscores, and a user's file that only looks like ours must never be removed.
    return (len(name) == _TEMP_LENGTH and name.startswith(TEMP_PREFIX)
            and not name[len(TEMP_PREFIX):].strip(_HEX))
