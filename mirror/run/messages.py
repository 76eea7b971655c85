"""What crosses between the master and its workers: tasks out, reports back (picklable, small)."""
from __future__ import annotations

from collections.abc import Iterator
from typing import NamedTuple

from ..events import Finished
from ..model import Action, Op, Outcome, Reason, Status

DONE = Status.DONE
new_tuple = tuple.__new__


class Batch(NamedTuple):
    """A unit of work for one worker: actions in one or a few folders."""

    id: int
    actions: tuple[Action, ...]


Done = tuple[Op, bytes, Reason, int]   # op, path, reason, nbytes


class WorkerReport(NamedTuple):
    """Worker -> master, on the queue: what finished since the last report; the last one of a
    task also carries a folder task's result."""

    task_id: int
    outcomes: tuple[Outcome, ...]   # the ones that did not succeed, with their whole actions
    nbytes: int                     # bytes written since the last report
    final: bool
    result: object = None           # a FolderResult, on the final report of a folder task
    done: tuple[Done, ...] = ()     # the ones that succeeded, as plain tuples: most reports
                                    # are these, and plain tuples pickle and unpickle in C
    restarts: int = 0               # copies begun again because their source changed

    def successes(self) -> Iterator[Finished]:
        """The successes of the report as the records sinks receive."""
        for op, path, reason, nbytes in self.done:  # every field, built in C
            yield new_tuple(Finished, (op, path, reason, DONE, nbytes, None))

    def finished(self) -> Iterator[Finished]:
        """Every entry of the report, failures too, as the records sinks receive."""
        yield from self.successes()
        yield from map(Finished.of, self.outcomes)
