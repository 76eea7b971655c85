"""One run per DST: an advisory flock on the DST folder itself, so nothing is left inside it."""
from __future__ import annotations

import fcntl
import os

from ..errors import LockHeld, MirrorError
from ..model import display


def lock_dst(dst: bytes) -> int:
    """Lock DST for this run and return the descriptor; the kernel drops it when we die."""
    try:
        fd = os.open(dst, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as error:
        raise MirrorError(f"cannot open destination {display(dst)}: {error.strerror}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise LockHeld(f"another mirror run is using {display(dst)}") from None
    return fd


def unlock(fd: int) -> None:
    os.close(fd)
