"""Copy one regular file: open, copy bytes, set metadata on the descriptor, rename into place."""
from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable

from ..model import SourceError
from ..paths import temp_name
from ..plan.compare import wanted_perms
from .fastcopy import CopyBytes, OnBytes

READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
WRITE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


class SourceChanged(SourceError):
    """SRC's file changed while it was copied; the runner tries it again (--retries)."""


def open_source(dir_fd: int, name: bytes, path: bytes) -> tuple[int, os.stat_result]:
    """Open a source file without following links or blocking on a FIFO; it must be regular."""
    try:
        fd = os.open(name, READ_FLAGS, dir_fd=dir_fd)
    except OSError as error:
        raise SourceError(error.errno, error.strerror, path) from None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise SourceError(errno.EINVAL, "no longer a regular file", path)
    return fd, st


def set_meta(fd: int, st: os.stat_result, owner: bool) -> None:
    """Owner first (chown clears setuid), then permissions, then times, all on the descriptor."""
    if owner:
        os.fchown(fd, st.st_uid, st.st_gid)
    os.fchmod(fd, wanted_perms(st.st_mode, owner))
    os.utime(fd, ns=(st.st_atime_ns, st.st_mtime_ns))


def unchanged(before: os.stat_result, after: os.stat_result) -> bool:
    return (before.st_size, before.st_mtime_ns, before.st_ctime_ns) == (
        after.st_size, after.st_mtime_ns, after.st_ctime_ns)


def write_temp(src_fd: int, st: os.stat_result, dst_dir_fd: int, tmp: bytes,
               owner: bool, copy_bytes: CopyBytes, on_bytes: OnBytes) -> bool:
    """Write SRC's bytes and metadata to `tmp`; False (and no tmp left) if SRC changed meanwhile."""
    out = os.open(tmp, WRITE_FLAGS, 0o600, dir_fd=dst_dir_fd)
    try:
        copy_bytes(src_fd, out, st.st_size, on_bytes)
        if not unchanged(st, os.fstat(src_fd)):
            os.close(out)
            out = -1
            os.unlink(tmp, dir_fd=dst_dir_fd)
            return False
        set_meta(out, st, owner)
    except BaseException:
        if out >= 0:
            os.close(out)
        discard(tmp, dst_dir_fd)
        raise
    os.close(out)
    return True


def copy_file(src_dir_fd: int, dst_dir_fd: int, name: bytes, path: bytes, owner: bool,
              copy_bytes: CopyBytes, on_bytes: OnBytes, place: Callable[[bytes], None]) -> int:
    """Copy SRC's `name` into a temporary file, then `place(tmp)` renames it over DST's name.

    The temporary file is removed on every failure, so DST's old version stays whole. A file
    that changed while it was read fails with SourceChanged (the runner retries it later):
    DST never gets the old mtime with new bytes.
    """
    src_fd, st = open_source(src_dir_fd, name, path)
    try:
        tmp = temp_name()
        if not write_temp(src_fd, st, dst_dir_fd, tmp, owner, copy_bytes, on_bytes):
            raise SourceChanged(errno.EAGAIN, "changed while it was copied", path)
    finally:
        os.close(src_fd)
    try:
        place(tmp)
    except BaseException:
        discard(tmp, dst_dir_fd)
        raise
    return st.st_size


def discard(tmp: bytes, dir_fd: int) -> None:
    try:
        os.unlink(tmp, dir_fd=dir_fd)
    except FileNotFoundError:
        pass

