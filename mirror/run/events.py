"""Small picklable messages: workers -> master through the queue, and engine -> sinks."""
from __future__ import annotations

from typing import NamedTuple

from ..model import Action, Outcome, Problem


class Batch(NamedTuple):
    """A unit of work for one worker: actions in one or a few folders."""

    id: int
    actions: tuple[Action, ...]


class WorkerReport(NamedTuple):
    """Worker -> master, on the queue: outcomes since the last report; the last one of a task
    also carries a folder task's result."""

    task_id: int
    outcomes: tuple[Outcome, ...]   # their actions travel light: op, path and reason only
    nbytes: int                     # bytes written since the last report
    final: bool
    result: object = None           # a FolderResult, on the final report of a folder task


# What sinks receive (on_event); one Finished per action, whichever engine ran it.

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


class Noticed(NamedTuple):
    """A problem the planner met: an unreadable folder, a skipped socket."""

    problem: Problem


Event = Discovered | ScanDone | Progress | Finished | Noticed
