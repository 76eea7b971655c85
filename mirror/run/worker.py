"""Pool worker: apply a batch of actions and report finished files through the queue."""
from __future__ import annotations

import os
import signal
import time

from ..model import Mode, Status
from ..options import Options
from .apply import Applier
from .events import Batch, WorkerReport

REPORT_EVERY_S = 0.1

_queue = None
_applier: Applier | None = None
_batch_id = -1
_unreported_bytes = 0
_done: list[tuple[int, int, int]] = []
_failed: list[tuple[int, OSError]] = []
_last_report = 0.0


def ignore_signals(close_fd: int = -1) -> None:
    """Helpers leave SIGINT to the master, and hold no copy of DST's lock."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if close_fd >= 0:
        os.close(close_fd)


def _stop(signum, frame):
    # Raised inside whatever is running, so a half-written temporary file is removed.
    raise SystemExit(128 + signum)


def init(queue, src_root: bytes, dst_root: bytes, mode: Mode, options: Options, lock_fd: int) -> None:
    """Pool initializer: the queue proxy is passed once here, not with every task."""
    global _queue, _applier
    ignore_signals(lock_fd)
    signal.signal(signal.SIGTERM, _stop)
    _queue = queue
    _applier = Applier(src_root, dst_root, mode, options, on_bytes=_count_bytes)


def _count_bytes(nbytes: int) -> None:
    global _unreported_bytes
    _unreported_bytes += nbytes
    if time.monotonic() - _last_report >= REPORT_EVERY_S:
        _report(final=False)


def _report(final: bool) -> None:
    global _unreported_bytes, _last_report
    _queue.put(WorkerReport(_batch_id, tuple(_done), tuple(_failed), _unreported_bytes, final))
    _done.clear()
    _failed.clear()
    _unreported_bytes, _last_report = 0, time.monotonic()


def run_batch(batch: Batch) -> int:
    """Apply every action of the batch; one queue message per batch, or one per ~0.1 s."""
    global _batch_id, _last_report
    _batch_id, _last_report = batch.id, time.monotonic()
    for index, action in enumerate(batch.actions):
        outcome = _applier.apply(action)  # may report (and clear) what is pending so far
        if outcome.status is Status.DONE:
            _done.append((index, outcome.nbytes, outcome.deleted))
        else:
            _failed.append((index, outcome.error))
        if time.monotonic() - _last_report >= REPORT_EVERY_S:
            _report(final=False)
    _report(final=True)
    return batch.id
