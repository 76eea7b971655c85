"""Small picklable messages: workers -> master through the queue, and engine -> sinks."""
from __future__ import annotations

from dataclasses import dataclass

from ..model import Action, Outcome, Problem


@dataclass(frozen=True, slots=True)
class Batch:
    """A unit of work for one worker: actions in one or a few folders."""

    id: int
    actions: tuple[Action, ...]


@dataclass(frozen=True, slots=True)
class BatchReport:
    """Worker -> master: outcomes finished since the last report, and bytes not yet reported."""

    batch_id: int
    outcomes: tuple[Outcome, ...]
    nbytes: int
    final: bool


# What sinks receive (on_event); one Finished per action, whichever engine ran it.

@dataclass(frozen=True, slots=True)
class Planned:
    """The planner decided an action that changes DST (totals grow while the walk runs)."""

    action: Action


@dataclass(frozen=True, slots=True)
class ScanDone:
    """The walk is over: the totals are final."""

    files: int
    nbytes: int


@dataclass(frozen=True, slots=True)
class Progress:
    """Bytes written since the last Progress event."""

    nbytes: int


@dataclass(frozen=True, slots=True)
class Finished:
    outcome: Outcome


@dataclass(frozen=True, slots=True)
class Noticed:
    """A problem the planner met: an unreadable folder, a skipped socket."""

    problem: Problem


Event = Planned | ScanDone | Progress | Finished | Noticed
