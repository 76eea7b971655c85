"""What a run tells its sinks (on_event): progress, finished entries, problems; the library's events."""
from __future__ import annotations

from typing import NamedTuple

from .model import Op, Outcome, Problem, Reason, Status


class Discovered(NamedTuple):
    """More files to copy were found (totals grow while the walk runs)."""

    files: int
    nbytes: int


class ScanDone(NamedTuple):
    """The walk is over: the totals are final."""

    files: int
    nbytes: int


class Progress(NamedTuple):
    """Bytes written since the last Progress event; Progress(0) at least every 0.5 s, so that
    a sink's clock runs while nothing is written (a walk, a no-op)."""

    nbytes: int


class Walked(NamedTuple):
    """Folders were listed and compared: `checked` entries more found in both trees, and how
    far the walk is (so that a sink can estimate the totals before it ends)."""

    checked: int
    folders_done: int
    folders_found: int


class Finished(NamedTuple):
    """One action is over: what was done (op), where, why, how it ended, the bytes it wrote,
    and the OSError (errno and paths kept) when it failed. In check, what sync would do."""

    op: Op
    path: bytes
    reason: Reason
    status: Status
    nbytes: int = 0
    error: OSError | None = None

    @classmethod
    def of(cls, outcome: Outcome) -> Finished:
        action = outcome.action
        return cls(action.op, action.path, action.reason, outcome.status, outcome.nbytes, outcome.error)


class Retrying(NamedTuple):
    """An entry failed with an error that can go away; it is tried again (--retries)."""

    path: bytes
    error: OSError


class Noticed(NamedTuple):
    """A problem the planner met: an unreadable folder, a skipped socket."""

    problem: Problem


Event = Discovered | ScanDone | Progress | Walked | Finished | Retrying | Noticed
