"""Small picklable messages: workers -> master through the queue, and engine -> sinks."""
from __future__ import annotations

from typing import NamedTuple

from ..model import Action, Outcome, Problem


class Batch(NamedTuple):
    """A unit of work for one worker: actions in one or a few folders."""

    id: int
    actions: tuple[Action, ...]


class WorkerReport(NamedTuple):
    """Worker -> master, on the queue: what finished since the last report, by index in the batch.

    Compact on purpose: the master still has the actions, so only results travel back.
    """

    batch_id: int
    done: tuple[tuple[int, int, int], ...]        # (index, bytes written, entries deleted)
    failed: tuple[tuple[int, OSError], ...]
    nbytes: int                                    # bytes written since the last report
    final: bool


class BatchReport(NamedTuple):
    """What an engine hands the runner: outcomes of one batch, and bytes written meanwhile."""

    batch_id: int
    outcomes: tuple[Outcome, ...]
    nbytes: int
    final: bool


# What sinks receive (on_event); one Finished per action, whichever engine ran it.

class Planned(NamedTuple):
    """The planner decided an action that changes DST (totals grow while the walk runs)."""

    action: Action


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


Event = Planned | ScanDone | Progress | Finished | Noticed
