"""Engines carry out batches of actions and hand back their reports; the Pool is the default."""
from __future__ import annotations

import multiprocessing
import queue as queues
from multiprocessing.managers import SyncManager
from typing import Protocol

from ..model import Action, Mode, Op, Outcome
from ..options import Options
from . import worker
from .apply import Applier
from .events import Batch, BatchReport, WorkerReport


class Engine(Protocol):
    """What the runner needs of an engine; other engines and transports implement this too."""

    def submit(self, batch: Batch) -> None:
        """Start a batch; its outcomes come back through receive()."""

    def receive(self, timeout: float) -> list[BatchReport]:
        """Reports that arrived, waiting up to `timeout` seconds for the first."""

    @property
    def pending(self) -> int:
        """Batches submitted whose final report has not been received."""

    def run_inline(self, action: Action) -> Outcome:
        """Apply one action now, in order: folders, deletions, hard links, folder metadata."""

    def close(self) -> None:
        """Wait for the helpers and release them."""

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
        self.batches: dict[int, tuple[Action, ...]] = {}
        self.applier = Applier(src_root, dst_root, mode, options)

    def submit(self, batch: Batch) -> None:
        self.results[batch.id] = self.pool.apply_async(worker.run_batch, (batch,))
        self.batches[batch.id] = batch.actions

    @property
    def pending(self) -> int:
        return len(self.results)

    def receive(self, timeout: float) -> list[BatchReport]:
        messages = []
        try:
            messages.append(self.queue.get(timeout=timeout) if timeout > 0 else self.queue.get_nowait())
            while True:
                messages.append(self.queue.get_nowait())
        except queues.Empty:
            pass
        if not messages:
            self.raise_worker_bug()
        return [self.unpack(message) for message in messages]

    def unpack(self, message: WorkerReport) -> BatchReport:
        """Join a worker's compact results with the actions the master kept."""
        actions = self.batches[message.batch_id]
        outcomes = [Outcome.done(actions[i], nbytes, deleted) for i, nbytes, deleted in message.done]
        outcomes += [Outcome.failed(actions[i], error) for i, error in message.failed]
        if message.final:
            del self.results[message.batch_id], self.batches[message.batch_id]
        return BatchReport(message.batch_id, tuple(outcomes), message.nbytes, message.final)

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


class DryRunEngine:
    """Changes nothing: every action is reported done, so a dry run counts what a run would do."""

    def __init__(self) -> None:
        self.reports: list[BatchReport] = []

    def submit(self, batch: Batch) -> None:
        outcomes = tuple(self.run_inline(action) for action in batch.actions)
        self.reports.append(BatchReport(batch.id, outcomes, sum(o.nbytes for o in outcomes), True))

    @property
    def pending(self) -> int:
        return len(self.reports)

    def receive(self, timeout: float) -> list[BatchReport]:
        reports, self.reports = self.reports, []
        return reports

    def run_inline(self, action: Action) -> Outcome:
        return Outcome.done(action, action.size, 1 if action.op is Op.DELETE else 0)

    def close(self) -> None:
        pass

    def abort(self) -> None:
        pass
