"""Drive a run: feed the planner's stream to an engine in batches, count outcomes, emit events."""
from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from ..errors import Interrupted, Terminated
from ..model import Action, Mode, Op, Outcome, Problem
from ..options import Options
from ..paths import depth
from ..plan.march import plan
from ..report import Report
from .engine import Engine
from .events import Batch, BatchReport, Event, Finished, Noticed, Planned, Progress, ScanDone

BATCH_FILES = 256
BATCH_BYTES = 64 << 20
BIG_FILE = 16 << 20         # a file this big gets a batch of its own
BATCH_AGE_S = 0.05          # a slow walk still keeps the workers busy
DRAIN_EVERY_S = 0.1
PENDING_PER_JOB = 4         # bounds memory: the plan is a stream, not a list
BATCHED = frozenset({Op.COPY, Op.SYMLINK, Op.SPECIAL, Op.SET_META})
INLINE = frozenset({Op.MKDIR, Op.CLEANUP})

OnEvent = Callable[[Event], None]


class Runner:
    def __init__(self, src_root: bytes, dst_root: bytes, mode: Mode, options: Options,
                 engine: Engine, on_event: OnEvent | None = None) -> None:
        self.src_root, self.dst_root = src_root, dst_root
        self.mode, self.options, self.engine = mode, options, engine
        self.on_event = on_event or (lambda event: None)
        self.report = Report(mode, options.jobs, options.dry_run)
        self.batch: list[Action] = []
        self.batch_bytes = 0
        self.batch_born = 0.0
        self.batches = 0
        self.last_drain = 0.0
        self.planned_files = self.planned_bytes = 0
        self.hardlinks: list[Action] = []
        self.deletions: list[Action] = []
        self.dir_metas: list[Action] = []

    def run(self) -> Report:
        started = time.monotonic()
        try:
            with sigterm_raises():
                self.copy_phase()
                self.finish_phase()
            self.engine.close()
        except (KeyboardInterrupt, Terminated) as stop:
            self.engine.abort()
            self.report.interrupted = True
            self.report.elapsed_s = time.monotonic() - started
            signum = signal.SIGINT if isinstance(stop, KeyboardInterrupt) else signal.SIGTERM
            raise Interrupted(signum, self.report) from None
        except BaseException:
            self.engine.abort()
            raise
        self.report.elapsed_s = time.monotonic() - started
        return self.report

    def copy_phase(self) -> None:
        for item in plan(self.src_root, self.dst_root, self.mode, self.options):
            if isinstance(item, Problem):
                self.report.notice(item)
                self.on_event(Noticed(item))
            elif item.op is Op.SKIP:
                self.report.skip(item)
            else:
                self.route(item)
            if self.engine.pending and time.monotonic() - self.last_drain >= DRAIN_EVERY_S:
                self.absorb(self.engine.receive(0))
        self.flush()
        self.on_event(ScanDone(self.planned_files, self.planned_bytes))
        while self.engine.pending:
            self.absorb(self.engine.receive(0.5))

    def route(self, action: Action) -> None:
        self.on_event(Planned(action))
        if action.op is Op.COPY:
            self.planned_files += 1
            self.planned_bytes += action.size
        if action.op in BATCHED:
            if action.size >= BIG_FILE:
                self.submit([action])
                return
            if not self.batch:
                self.batch_born = time.monotonic()
            self.batch.append(action)
            self.batch_bytes += action.size
            if (len(self.batch) >= BATCH_FILES or self.batch_bytes >= BATCH_BYTES
                    or time.monotonic() - self.batch_born >= BATCH_AGE_S):
                self.flush()
        elif action.op in INLINE:
            self.record(self.engine.run_inline(action))
        elif action.op is Op.HARDLINK:
            self.hardlinks.append(action)   # after the files they link to are written
        elif action.op is Op.DELETE:
            self.deletions.append(action)   # after the copy phase, and only if it went well
        else:
            self.dir_metas.append(action)   # last, deepest first

    def flush(self) -> None:
        if self.batch:
            self.submit(self.batch)
            self.batch, self.batch_bytes = [], 0

    def submit(self, actions: list[Action]) -> None:
        self.engine.submit(Batch(self.batches, tuple(actions)))
        self.batches += 1
        while self.engine.pending >= self.options.jobs * PENDING_PER_JOB:
            self.absorb(self.engine.receive(0.5))

    def absorb(self, reports: list[BatchReport]) -> None:
        self.last_drain = time.monotonic()
        for report in reports:
            if report.nbytes:
                self.on_event(Progress(report.nbytes))
            for outcome in report.outcomes:
                self.record(outcome)

    def record(self, outcome: Outcome) -> None:
        self.report.record(outcome)
        self.on_event(Finished(outcome))

    def finish_phase(self) -> None:
        for action in self.hardlinks:
            self.record(self.engine.run_inline(action))
        if self.deletions:
            self.delete()
        for action in sorted(self.dir_metas, key=lambda action: -depth(action.path)):
            self.record(self.engine.run_inline(action))

    def delete(self) -> None:
        count, limit = len(self.deletions), self.options.max_delete
        if self.report.errors:
            self.report.deletions_skipped = f"{count} deletions skipped because of errors"
        elif limit is not None and count > limit:
            self.report.deletions_skipped = f"{count} deletions planned, more than --max-delete {limit}: none done"
            self.report.deletions_refused = True
        else:
            for action in self.deletions:
                self.record(self.engine.run_inline(action))
            return
        self.report.warnings.append(self.report.deletions_skipped)


def check(src_root: bytes, dst_root: bytes, options: Options) -> Report:
    """Compare without changing anything: the differences are what sync would change."""
    started = time.monotonic()
    report = Report(Mode.CHECK, options.jobs, options.dry_run)
    for item in plan(src_root, dst_root, Mode.CHECK, options):
        if isinstance(item, Problem) or item.op is not Op.SKIP:
            report.differ(item)
        else:
            report.skip(item)
    report.elapsed_s = time.monotonic() - started
    return report


@contextmanager
def sigterm_raises() -> Iterator[None]:
    """Turn SIGTERM into an exception in the master, so the run can stop cleanly."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum, frame):
        raise Terminated()

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
