"""Pool worker: run folder tasks and batches, and report finished entries through the queue."""
from __future__ import annotations

import os
import pickle
import signal
import time

from ..errors import STOP_SIGNALS
from ..model import Mode, Outcome, Status
from ..options import Options
from ..plan.march import Planner
from .apply import Applier
from .events import Batch, Done, WorkerReport
from .folders import FolderTask, run_folders

REPORT_EVERY_S = 0.1
PR_SET_PDEATHSIG = 1
DONE = Status.DONE

_queue = None
_applier: Applier | None = None
_planner: Planner | None = None
_task_id = -1
_unreported_bytes = 0
_failed: list[Outcome] = []
_done: list[Done] = []
_last_report = 0.0
_slots = None
_slot = 0
_stopping = False


def ignore_signals(close_fd: int = -1, master: int = 0, on_orphan: int = signal.SIGKILL,
                   on_sigterm=signal.SIG_DFL) -> None:
    """Helpers leave SIGINT and SIGHUP to the master, hold no copy of DST's lock, and die with
    the master; SIGTERM, the master's way to stop them, gets `on_sigterm`, not the master's
    handler that fork copied."""
    # SIGHUP as SIGINT: a closed terminal sends it to the whole process group, helpers included.
    # A worker that died of it would leave its temporary file and its task half done, while the
    # master, which gets it too, stops every worker cleanly (SIGTERM) and says so.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, on_sigterm)
    if close_fd >= 0:
        os.close(close_fd)
    die_with(master, on_orphan)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)  # blocked while the master forked us


def die_with(master: int, signum: int) -> None:
    """Get `signum` when the master dies (even by kill -9), so no helper outlives a run."""
    import ctypes
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signum)
    except (OSError, AttributeError):
        return  # not Linux: the pool's pipes still end idle workers
    if master and os.getppid() != master:
        os.kill(os.getpid(), signum)  # the master died before we asked


def _stop(signum, frame):
    # Raised inside whatever is running, so a half-written temporary file is removed; the
    # master repeats SIGTERM until we are gone, and a second one must not cut that clean-up.
    global _stopping
    if not _stopping:
        _stopping = True
        raise SystemExit(128 + signum)


def init(queue, src_root: bytes, dst_root: bytes, mode: Mode, options: Options, lock_fd: int,
         master: int, slots, slots_used) -> None:
    """Pool initializer: the queue proxy is passed once here, not with every task."""
    global _queue, _applier, _planner, _slots, _slot
    ignore_signals(lock_fd, master, signal.SIGTERM, _stop)  # SIGTERM: the temporary file is removed
    with slots_used.get_lock():
        _slot = 2 * (slots_used.value % (len(slots) // 2))
        slots_used.value += 1
    _slots = slots
    _slots[_slot], _slots[_slot + 1] = os.getpid(), -1
    _queue = queue
    _applier = Applier(src_root, dst_root, mode, options, on_bytes=_count_bytes)
    _planner = Planner(src_root, dst_root, mode, options)


def _count_bytes(nbytes: int) -> None:
    global _unreported_bytes
    _unreported_bytes += nbytes
    if time.monotonic() - _last_report >= REPORT_EVERY_S:
        _report(final=False)


def _finish(outcome: Outcome) -> None:
    if outcome.status is DONE:  # light: a failure keeps its whole action, to be retried
        action = outcome.action
        _done.append((action.op, action.path, action.reason, outcome.nbytes))
    else:
        _failed.append(outcome)
    if time.monotonic() - _last_report >= REPORT_EVERY_S:
        _report(final=False)


def _report(final: bool, result: object = None) -> None:
    global _unreported_bytes, _last_report
    # Pickled here, once: the manager then only stores bytes instead of unpickling and
    # pickling every outcome again on its way to the master.
    report = WorkerReport(_task_id, tuple(_failed), _unreported_bytes, final, result,
                          tuple(_done))
    _queue.put(pickle.dumps(report, pickle.HIGHEST_PROTOCOL))
    _failed.clear()
    _done.clear()
    _unreported_bytes, _last_report = 0, time.monotonic()


def run_task(task: Batch | FolderTask) -> int:
    """Run a batch or a folder; one queue message per task, or one per ~0.1 s."""
    global _task_id, _last_report
    _task_id, _last_report = task.id, time.monotonic()
    _slots[_slot + 1] = task.id  # the master's watchdog reads this if we die
    result = None
    if isinstance(task, FolderTask):
        result = run_folders(task, _planner, _applier.apply, _finish)
    else:
        for action in task.actions:
            _finish(_applier.apply(action))
    _report(final=True, result=result)
    _slots[_slot + 1] = -1
    return task.id
