"""Errors that stop a run before it writes anything; per-entry failures are Outcomes, not errors."""
from __future__ import annotations


class MirrorError(Exception):
    """A usage or setup error: bad options, a missing SRC, overlapping trees (exit 2)."""

    exit_code = 2


class LockHeld(MirrorError):
    """Another mirror run holds the lock on DST (exit 3)."""

    exit_code = 3


class Interrupted(Exception):
    """The run was stopped by a signal; `report` holds what was done until then."""

    def __init__(self, signum: int, report: object) -> None:
        super().__init__(f"interrupted by signal {signum}")
        self.signum = signum
        self.report = report

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


class Terminated(BaseException):
    """Raised in the master by SIGTERM, as KeyboardInterrupt is by SIGINT."""


def describe(error: OSError) -> str:
    """One line for an OSError: its message and errno name, without Python's decoration."""
    import errno as errnos
    name = errnos.errorcode.get(error.errno or 0, "")
    text = error.strerror or str(error)
    return f"{text} ({name})" if name else text
