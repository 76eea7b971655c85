"""The vocabulary every layer shares: entries, kinds, actions, reasons and outcomes."""
from __future__ import annotations

import enum
import errno
import re
import stat
from typing import NamedTuple


class Symbol(enum.Enum):
    """An Enum hashed by identity, in C: Enum's own __hash__ is Python code, run for every
    dict or set lookup of a member (several per file). Members are singletons in every
    process (unpickled by value), so identity is what equality is anyway."""

    __hash__ = object.__hash__


class Kind(Symbol):
    FILE = "file"
    DIR = "dir"
    SYMLINK = "symlink"
    FIFO = "fifo"
    DEVICE = "device"
    SOCKET = "socket"


KIND_OF_FORMAT = {
    stat.S_IFREG: Kind.FILE,
    stat.S_IFDIR: Kind.DIR,
    stat.S_IFLNK: Kind.SYMLINK,
    stat.S_IFIFO: Kind.FIFO,
    stat.S_IFCHR: Kind.DEVICE,
    stat.S_IFBLK: Kind.DEVICE,
    stat.S_IFSOCK: Kind.SOCKET,
}


class Mode(Symbol):
    """What a run is for: copy never deletes, sync deletes extras, check only compares."""

    COPY = "copy"
    SYNC = "sync"
    CHECK = "check"


class EngineChoice(Symbol):
    """Where a run's tasks run (--engine): worker processes on this machine, the ranks of an MPI
    job, or the job's ranks when this process is rank 0 of one and the processes otherwise."""

    POOL = "pool"
    MPI = "mpi"
    AUTO = "auto"


# The records that cross layers and processes are NamedTuples: immutable like frozen
# dataclasses, but 4-8x cheaper to build and to unpickle, which the per-file path feels.

class Entry(NamedTuple):
    """One directory entry as lstat saw it; `path` is relative to its tree's root."""

    path: bytes
    kind: Kind
    mode: int
    size: int
    mtime_ns: int
    uid: int
    gid: int
    ino: int
    dev: int
    nlink: int
    rdev: int = 0
    target: bytes | None = None  # symlinks only
    ctime_ns: int = 0            # with atime_ns: so that a copy can trust the listing's lstat
    atime_ns: int = 0

    @property
    def perms(self) -> int:
        return stat.S_IMODE(self.mode)


class Op(Symbol):
    """What an action does to DST."""

    MKDIR = "mkdir"          # create a folder (its metadata is set after its contents)
    COPY = "copy"            # write a file's bytes and metadata
    SYMLINK = "symlink"      # create or replace a symbolic link
    SPECIAL = "special"      # create a FIFO or a device node
    HARDLINK = "hardlink"    # link to a file copied earlier in this run
    SET_META = "set-meta"    # content equal: fix permissions, owner or mtime only
    DIR_META = "dir-meta"    # set a folder's permissions, owner and mtime (after its contents)
    DELETE = "delete"        # remove an entry SRC does not have (sync only)
    CLEANUP = "cleanup"      # remove a temporary file a killed run left behind
    SKIP = "skip"            # nothing to do


class Reason(Symbol):
    """Why an action is needed; shown by --dry-run -v and check."""

    MISSING = "missing"
    TYPE_CHANGED = "type changed"
    SIZE = "size differs"
    MTIME = "mtime differs"
    CHECKSUM = "checksum differs"
    PERMS = "permissions differ"
    OWNER = "owner differs"
    TARGET = "link target differs"
    DEVICE = "device number differs"
    LINKED = "hard link"
    XATTRS = "xattrs differ"
    ACLS = "ACLs differ"
    EXTRA = "not in source"
    STALE_TEMP = "temporary file of an interrupted run"
    UNCHANGED = "unchanged"


class Action(NamedTuple):
    """One decision of the planner: do `op` at `path` (relative) because of `reason`."""

    op: Op
    path: bytes
    reason: Reason
    src: Entry | None = None       # what SRC has (None for deletions)
    dst: Entry | None = None       # what DST had when planned
    link_to: bytes | None = None   # HARDLINK: the path of the first copy

    @property
    def size(self) -> int:
        return self.src.size if self.op is Op.COPY and self.src else 0


class Unchanged(NamedTuple):
    """What the planner yields for a folder's regular files the quick check found unchanged:
    a count, no object each."""

    files: int


class Status(Symbol):
    DONE = "done"
    FAILED = "failed"
    VANISHED = "vanished"   # the source entry disappeared before it could be copied


class Outcome(NamedTuple):
    """What happened to one action; a failure keeps the OSError with its errno and paths."""

    action: Action
    status: Status
    nbytes: int = 0
    error: OSError | None = None

    @classmethod
    def done(cls, action: Action, nbytes: int = 0) -> Outcome:
        return tuple.__new__(cls, (action, Status.DONE, nbytes, None))  # once a file

    @classmethod
    def failed(cls, action: Action, error: OSError) -> Outcome:
        if error.errno == errno.ENOENT and action.op is Op.COPY and isinstance(error, SourceError):
            return cls(action, Status.VANISHED, 0, error)
        return cls(action, Status.FAILED, 0, error)


class SourceError(OSError):
    """An OSError raised while reading SRC (so a vanished source is told apart from DST errors)."""


# DST cannot take more: after the first of these no new write is started there.
DST_FULL = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS})
# Errors that can go away by themselves (a network filesystem, a file being written): the only
# ones --retries tries again. EACCES, ENOENT, ENAMETOOLONG, ELOOP, ... will not change.
RETRYABLE = frozenset({errno.EIO, errno.ESTALE, errno.ETIMEDOUT, errno.EAGAIN, errno.EINTR,
                       errno.EBUSY, errno.ECONNRESET, errno.ECONNABORTED})


def fills_dst(error: OSError | None) -> bool:
    return error is not None and error.errno in DST_FULL and not isinstance(error, SourceError)


class NotWritten(OSError):
    """Not attempted: an earlier write found DST full or read-only."""


# A name is data: a newline in it must not start a line of its own, nor ESC drive a terminal.
# Escaped, in Python's notation: C0 controls and DEL (\n, \t, \r, else \x1b), C1 controls as
# \u0085 (so they differ from the undecodable byte \x85, kept as \x85) and the backslash itself
# (\\), so that every escape reads back one way.
_UNSAFE = re.compile(r"[\x00-\x1f\x7f-\x9f\\\udc80-\udcff]")
_NAMED = {"\n": "\\n", "\t": "\\t", "\r": "\\r", "\\": "\\\\"}


def _escape(match: re.Match) -> str:
    char = match.group()
    code = ord(char)
    if char in _NAMED:
        return _NAMED[char]
    if code < 0x80:
        return f"\\x{code:02x}"
    if code < 0xA0:
        return f"\\u{code:04x}"
    return f"\\x{code - 0xDC00:02x}"  # surrogateescape's stand-in for an undecodable byte


def display(path: bytes) -> str:
    """A path for people, on one line: controls, backslashes and undecodable bytes escaped."""
    if not path:
        return "."
    text = path.decode("utf-8", "surrogateescape")
    if text.isprintable() and "\\" not in text:
        return text  # the usual name; controls and lone surrogates are not printable
    return _UNSAFE.sub(_escape, text)


class Severity(Symbol):
    WARNING = "warning"   # reported, does not change the exit code
    UNCOPIABLE = "not copied"  # SRC has it, no copy can have it (a socket): a warning; check
                          # lists it with `!`, and counts it (exit 1) only with --strict
    ERROR = "error"       # the run is partial (exit 1); sync deletes nothing


class Problem(NamedTuple):
    """Something the planner could not decide: an unreadable folder, a socket, a bad name."""

    path: bytes
    severity: Severity
    message: str
    error: OSError | None = None
