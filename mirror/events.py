"""What a run tells its sinks (on_event): progress, finished entries, problems; the library's events."""
from __future__ import annotations

from typing import NamedTuple

from .model import Outcome, Problem


class Discovered(NamedTuple):
    """More files to copy were found (totals grow while the walk runs)."""

    files: int
    nbytes: int


class ScanDone(NamedTuple):
    """The walk is over: the totals are final."""

    files: int
    nbytes: int


class Progress(NamedTuple):
    """Bytes written since the last Progress event."""

    nbytes: int


class Finished(NamedTuple):
    outcome: Outcome


class Retrying(NamedTuple):
    """An entry failed with an error that can go away; it is tried again (--retries)."""

    outcome: Outcome


class Noticed(NamedTuple):
    """A problem the planner met: an unreadable folder, a skipped socket."""

    problem: Problem


Event = Discovered | ScanDone | Progress | Finished | Retrying | Noticed
