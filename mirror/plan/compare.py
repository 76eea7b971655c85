"""Decide one entry: what SRC's entry needs done to DST's, and why."""
from __future__ import annotations

import os
import stat
from collections.abc import Callable

from ..model import Entry, Kind, Op, Reason

S_ISREG = stat.S_ISREG

OP_FOR_KIND = {
    Kind.FILE: Op.COPY,
    Kind.DIR: Op.MKDIR,
    Kind.SYMLINK: Op.SYMLINK,
    Kind.FIFO: Op.SPECIAL,
    Kind.DEVICE: Op.SPECIAL,
}

SameContent = Callable[[Entry, Entry], bool]


def wanted_perms(mode: int, owner: bool) -> int:
    """The permission bits DST gets: setuid/setgid only when owner and group are kept too."""
    perms = stat.S_IMODE(mode)
    return perms if owner else perms & ~(stat.S_ISUID | stat.S_ISGID)


def meta_differs(src: Entry, dst: Entry, owner: bool) -> Reason | None:
    """Why DST's metadata must be set again, if it must: permissions, owner, mtime."""
    if src.kind is not Kind.SYMLINK and wanted_perms(src.mode, owner) != dst.perms:
        return Reason.PERMS
    if owner and (src.uid, src.gid) != (dst.uid, dst.gid):
        return Reason.OWNER
    if src.mtime_ns != dst.mtime_ns:
        return Reason.MTIME
    return None


def same_file(src: os.stat_result, dst: os.stat_result, owner: bool) -> bool:
    """The quick check on two lstat results: regular files, same type, permissions, size,
    mtime, and the same owner and group when owners are kept. One call a file of a re-run."""
    return (src.st_mode == dst.st_mode and S_ISREG(src.st_mode) and src.st_size == dst.st_size
            and src.st_mtime_ns == dst.st_mtime_ns
            and (not owner or (src.st_uid == dst.st_uid and src.st_gid == dst.st_gid)))


def decide(src: Entry, dst: Entry | None, owner: bool,
           same_content: SameContent | None = None) -> tuple[Op, Reason]:
    """The action SRC's entry needs: (op, reason), or (Op.SKIP, UNCHANGED).

    Files are equal by size and mtime (the quick check), or by size and content when
    `same_content` is given (--checksum). Folders get Op.DIR_META when only metadata differs.
    """
    op = OP_FOR_KIND[src.kind]
    if dst is None:
        return op, Reason.MISSING
    if dst.kind is not src.kind or stat.S_IFMT(src.mode) != stat.S_IFMT(dst.mode):
        return op, Reason.TYPE_CHANGED
    if src.kind is Kind.FILE:
        if src.size != dst.size:
            return op, Reason.SIZE
        if same_content is not None:
            if not same_content(src, dst):
                return op, Reason.CHECKSUM
        elif src.mtime_ns != dst.mtime_ns:
            return op, Reason.MTIME
    elif src.kind is Kind.SYMLINK and src.target != dst.target:
        return op, Reason.TARGET
    elif src.kind is Kind.DEVICE and src.rdev != dst.rdev:
        return op, Reason.DEVICE
    reason = meta_differs(src, dst, owner)
    if reason is None:
        return Op.SKIP, Reason.UNCHANGED
    return (Op.DIR_META if src.kind is Kind.DIR else Op.SET_META), reason
