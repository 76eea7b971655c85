"""A worker: runs folder tasks and batches in whatever process an engine gives it, and reports."""
from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import NamedTuple

from ..model import Action, Mode, Op, Outcome, Status
from ..options import Options
from ..plan.march import SPLIT_AT, Planner
from ..plan.tree import LocalTree, SourceTree
from .apply import Applier, Copied
from .folders import FolderTask, run_folders
from .messages import Batch, Done, WorkerReport
from .parts import Part, copy_part

REPORT_EVERY_S = 0.1
STOPPED = 128 + 15   # a worker stopped by the master (SIGTERM)
DONE = Status.DONE
COPY = Op.COPY

Emit = Callable[[WorkerReport], None]


class WorkerSpec(NamedTuple):
    """All a worker needs, small and picklable: an engine sends it once to each process."""

    src: SourceTree
    dst: bytes
    mode: Mode
    options: Options


class Worker:
    """Plans and copies what tasks hand it; reports what finished through `emit`, one message
    at the end of a task and one every 0.1 s meanwhile (so the master's bar moves)."""

    def __init__(self, spec: WorkerSpec) -> None:
        self.applier = Applier(spec.src, spec.dst, spec.mode, spec.options, on_bytes=self.count_bytes)
        self.planner = Planner(spec.src, LocalTree(spec.dst), spec.mode, spec.options)
        self.planner.split_at = SPLIT_AT  # a big folder comes back in chunks, a task each
        spec.src.prefetch()  # a remote tree connects now, while the master still starts up
        self.emit: Emit = lambda report: None
        self.task_id = -1
        self.unreported = 0
        self.failed: list[Outcome] = []
        self.done: list[Done] = []
        self.last_report = 0.0
        self.stopping = False  # set by a stop signal: the work ends at the next safe point

    def run(self, task: Batch | FolderTask | Part, emit: Emit) -> None:
        self.emit, self.task_id, self.last_report = emit, task.id, time.monotonic()
        result = None
        if isinstance(task, FolderTask):
            result = run_folders(task, self.planner, self.applier.apply, self.applier.apply_all, self.finish)
        elif type(task) is Part:
            result = copy_part(self.applier, task, self.count_bytes)
        else:
            self.planner.src.prefetch(files=[action.src for action in task.actions if action.op is COPY])
            self.finish_all(task.actions)
        self.report(final=True, result=result)

    def finish_all(self, actions: Sequence[Action]) -> None:
        for outcome in self.applier.apply_all(actions):
            self.finish(outcome)

    def flush(self) -> None:
        """Report what finished so far: a stopped task's entries in place are counted too."""
        if self.done or self.failed or self.unreported:
            self.report(final=False)

    def request_stop(self) -> None:
        """A stop takes effect at the next safe point: between two entries (each reported or
        not begun), or between two chunks of a file (whose temporary file is then removed), so
        that every entry put in place is reported."""
        self.stopping = self.applier.files.stopping = True

    def count_bytes(self, nbytes: int) -> None:
        self.unreported += nbytes
        if time.monotonic() - self.last_report >= REPORT_EVERY_S:
            self.report(final=False)

    def finish(self, outcome: Outcome | Copied) -> None:
        if type(outcome) is Copied:  # a folder's small files, copied in one call
            self.done.extend([(COPY, action.path, action.reason, nbytes)
                              for action, nbytes in zip(outcome.actions, outcome.sizes)])
        elif outcome.status is DONE:  # light: a failure keeps its whole action, to be retried
            action = outcome.action
            self.done.append((action.op, action.path, action.reason, outcome.nbytes))
        else:
            self.failed.append(outcome)
        if self.stopping:
            raise SystemExit(STOPPED)
        if time.monotonic() - self.last_report >= REPORT_EVERY_S:
            self.report(final=False)

    def report(self, final: bool, result: object = None) -> None:
        files = self.applier.files
        report = WorkerReport(self.task_id, tuple(self.failed), self.unreported, final, result,
                              tuple(self.done), files.restarts)
        self.failed.clear()
        self.done.clear()
        self.unreported, files.restarts, self.last_report = 0, 0, time.monotonic()
        self.emit(report)
