"""Engines run folder tasks and batches and hand back their reports; the Pool is the default."""
from __future__ import annotations

import multiprocessing
import multiprocessing.pool
import queue as queues
from multiprocessing.managers import SyncManager
from typing import Protocol

from ..model import Action, Mode, Outcome
from ..options import Options
from . import worker
from .apply import Applier
from .events import Batch, WorkerReport
from .folders import FolderTask

Task = Batch | FolderTask


class Engine(Protocol):
    """What the runner needs of an engine; other engines and transports implement this too."""

    def submit(self, task: Task) -> None:
        """Start a task; its outcomes (and a folder's result) come back through receive()."""

    def receive(self, timeout: float) -> list[WorkerReport]:
        """Reports that arrived, waiting up to `timeout` seconds for the first."""

    @property
    def pending(self) -> int:
        """Tasks submitted whose final report has not been received."""

    def run_inline(self, action: Action) -> Outcome:
        """Apply one action now, in order: deletions, hard links, folder metadata."""

    def close(self) -> None:
        """Wait for the workers and release them."""

    def abort(self) -> None:
        """Stop at once (workers remove their temporary files)."""


class PoolEngine:
    """A multiprocessing Pool of workers reporting through a Manager queue."""

    def __init__(self, src_root: bytes, dst_root: bytes, mode: Mode, options: Options,
                 lock_fd: int = -1) -> None:
        context = multiprocessing.get_context("fork")
        self.manager = SyncManager(ctx=context)
        self.manager.start(worker.ignore_signals, (lock_fd,))
        self.queue = self.manager.Queue()
        self.pool = context.Pool(options.jobs, initializer=worker.init,
                                 initargs=(self.queue, src_root, dst_root, mode, options, lock_fd))
        self.results: dict[int, multiprocessing.pool.AsyncResult] = {}
        self.applier = Applier(src_root, dst_root, mode, options)

    def submit(self, task: Task) -> None:
        self.results[task.id] = self.pool.apply_async(worker.run_task, (task,))

    @property
    def pending(self) -> int:
        return len(self.results)

    def receive(self, timeout: float) -> list[WorkerReport]:
        reports = []
        try:
            reports.append(self.queue.get(timeout=timeout) if timeout > 0 else self.queue.get_nowait())
            while True:
                reports.append(self.queue.get_nowait())
        except queues.Empty:
            pass
        if not reports:
            self.raise_worker_bug()
        for report in reports:
            if report.final:
                del self.results[report.task_id]
        return reports

    def raise_worker_bug(self) -> None:
        """A task that raised (not an OSError: a bug) never reports; surface it."""
        for result in list(self.results.values()):
            if result.ready() and not result.successful():
                result.get()

    def run_inline(self, action: Action) -> Outcome:
        return self.applier.apply(action)

    def close(self) -> None:
        self.pool.close()
        self.pool.join()
        self._release()

    def abort(self) -> None:
        self.pool.terminate()
        self._release()

    def _release(self) -> None:
        self.applier.close()
        self.manager.shutdown()
