"""Engines run tasks and hand back their reports: the interface, and the engine that runs inline."""
from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple, Protocol, Union

from .folders import FolderTask
from .messages import Batch, WorkerReport
from .parts import Part
from .worker import Worker, WorkerSpec

Task = Union[Batch, FolderTask, Part]


class LostTask(NamedTuple):
    """A task whose worker died before its final report; the runner decides what follows."""

    task: Task


Message = Union[WorkerReport, LostTask]
DEPTH = 4   # tasks a worker the runner keeps submitted: bounds memory and keeps every worker fed


class EngineFailure(Exception):
    """The engine cannot go on (its manager process died): the run ends, incomplete."""


class Engine(Protocol):
    """What the runner needs of an engine. The Pool (run/pool.py) is the default; InlineEngine
    runs tasks in the calling process; MPIEngine (run/mpi.py) runs them on an MPI job's ranks."""

    width: int  # how many tasks run at once
    depth: int  # the runner keeps up to width * depth tasks submitted (DEPTH, or more where
                # each task costs more to hand out and the engine gathers several in one)
    workers_used: int | None  # distinct workers that ran a task, where the engine counts them

    def submit(self, task: Task) -> None:
        """Start a task; its reports come back through receive()."""

    def receive(self, timeout: float) -> list[Message]:
        """Reports that arrived (and tasks lost with their workers), waiting up to `timeout`
        seconds for the first."""

    @property
    def pending(self) -> int:
        """Tasks submitted whose final report has not been received (nor their loss)."""

    def close(self) -> list[Message]:
        """Wait for the workers and release them; what they still reported."""

    def abort(self) -> list[Message]:
        """Stop at once (workers remove their temporary files); what they still reported, and
        the tasks of workers that had to be killed (their temporary files may be left)."""


EngineFactory = Callable[[WorkerSpec, int], Engine]   # (spec, DST's lock descriptor) -> engine


class InlineEngine:
    """Runs each task at once, in the calling process: for debugging, and for tests that need
    no process boundary. A signal stops it where it is (the copy removes its temporary file)."""

    width = 1
    depth = DEPTH
    workers_used = 1

    def __init__(self, spec: WorkerSpec, lock_fd: int = -1) -> None:
        self.worker = Worker(spec)
        self.reports: list[WorkerReport] = []

    def submit(self, task: Task) -> None:
        self.worker.run(task, self.reports.append)

    @property
    def pending(self) -> int:
        return sum(report.final for report in self.reports)

    def receive(self, timeout: float) -> list[Message]:
        reports, self.reports = self.reports, []
        return reports

    def close(self) -> list[Message]:
        return self.receive(0)

    def abort(self) -> list[Message]:
        self.worker.flush()  # what a stopped task had finished
        return self.receive(0)
