"""Engines run folder tasks and batches and hand back their reports; the Pool is the default."""
from __future__ import annotations

import errno
import gc
import multiprocessing
import multiprocessing.pool
import os
import pickle
import secrets
import queue as queues
import signal
import sys
import threading
import time
from multiprocessing.connection import wait
from multiprocessing.managers import SyncManager
from typing import Protocol

from ..errors import HeldStops
from ..model import Mode, Outcome, Problem, Severity
from ..options import Options
from . import worker
from ..paths import DirCache, is_temp_name, split
from .copyfile import discard
from .events import Batch, WorkerReport
from .folders import FolderResult, FolderTask

Task = Batch | FolderTask
MANAGER_EXIT_S = 0.2   # how long the end of a run waits for the manager to be gone
SLOTS = 4096   # one (pid, task id) pair per worker process started, replacements included
WORKER_DIED = "a worker process died while doing this"
STUCK_S = 1.0        # no report for this long after a worker died: look for a lock it held
CLOSE_WAIT_S = 5.0   # idle workers leave on their own well within this
STOP_GRACE_S = 5.0   # then SIGTERM, repeated; SIGKILL after this


class EngineFailure(Exception):
    """The engine cannot go on (its manager process died): the run ends, incomplete."""


class Engine(Protocol):
    """What the runner needs of an engine; other engines and transports implement this too."""

    def submit(self, task: Task) -> None:
        """Start a task; its outcomes (and a folder's result) come back through receive()."""

    def receive(self, timeout: float) -> list[WorkerReport]:
        """Reports that arrived, waiting up to `timeout` seconds for the first."""

    @property
    def pending(self) -> int:
        """Tasks submitted whose final report has not been received."""

    def close(self) -> None:
        """Wait for the workers and release them."""

    def abort(self) -> None:
        """Stop at once (workers remove their temporary files)."""


class PoolEngine:
    """A multiprocessing Pool of workers reporting through a Manager queue."""

    def __init__(self, src_root: bytes, dst_root: bytes, mode: Mode, options: Options,
                 lock_fd: int = -1) -> None:
        context = multiprocessing.get_context("fork")
        held = HeldStops()  # until the helpers have their own handlers and can be stopped
        gc.freeze()  # so that the children's collector never writes to (and copies) our pages
        try:
            address = manager_address()
            self.abstract_socket = address is not None
            self.manager = SyncManager(address, ctx=context)
            self.manager.start(worker.ignore_signals, (lock_fd, os.getpid()))
            self.queue = self.manager.Queue()
            # Each worker notes in shared memory which task it runs: a Pool silently replaces a
            # killed worker and never completes its task, so the master must find such tasks.
            self.slots = context.Array("q", 2 * SLOTS, lock=False)
            self.slots_used = context.Value("i", 0)
            self.pool = context.Pool(options.jobs, initializer=worker.init,
                                     initargs=(self.queue, src_root, dst_root, mode, options,
                                               lock_fd, os.getpid(), self.slots, self.slots_used))
        except BaseException:
            held.release()
            raise
        finally:
            gc.unfreeze()
        self.results: dict[int, multiprocessing.pool.AsyncResult] = {}
        self.tasks: dict[int, Task] = {}
        self.rerun: set[int] = set()
        self.lost: dict[int, Task] = {}
        self.deaths = 0
        self.last_news = time.monotonic()
        self.dst_root = dst_root
        try:
            held.release()  # a stop signal that came meanwhile is raised here
        except BaseException:
            self.abort()
            raise

    def submit(self, task: Task) -> None:
        self.results[task.id] = self.pool.apply_async(worker.run_task, (task,))
        self.tasks[task.id] = task

    @property
    def pending(self) -> int:
        return len(self.results)

    def receive(self, timeout: float) -> list[WorkerReport]:
        reports = []
        try:  # one message a call: asking again only to hear "empty" would cost a round trip
            message = self.queue.get(timeout=timeout) if timeout > 0 else self.queue.get_nowait()
            reports.append(pickle.loads(message))
        except queues.Empty:
            pass
        except (EOFError, ConnectionError) as error:
            raise EngineFailure(f"lost the manager process that carries the workers' reports ({error!r})") from None
        if not reports:
            self.raise_worker_bug()
            reports = self.recover_lost_tasks()
            self.unstick()
        else:
            self.last_news = time.monotonic()
        for report in reports:
            if report.final:
                del self.results[report.task_id], self.tasks[report.task_id]
        if self.lost and not self.results:
            self.sweep_temp_files()  # nothing runs now: what is left was a dead worker's
        return reports

    def raise_worker_bug(self) -> None:
        """A task that raised (not an OSError: a bug) never reports; surface it."""
        for result in list(self.results.values()):
            if result.ready() and not result.successful():
                result.get()

    def recover_lost_tasks(self) -> list[WorkerReport]:
        """Run a dead worker's task again; if it dies twice, report the task as failed."""
        alive = self.alive_pids()
        reports = []
        for slot in range(min(self.slots_used.value, SLOTS)):
            pid, task_id = self.slots[2 * slot], self.slots[2 * slot + 1]
            if not pid or pid in alive:
                continue
            self.slots[2 * slot] = 0
            self.deaths += 1
            if task_id not in self.results:
                continue
            # The Pool waits for a lost task forever (close/join would hang, and terminate can
            # block on a queue lock the dead worker held): mark its old result as settled.
            self.results[task_id]._set(0, (True, None))
            task = self.tasks[task_id]
            if task_id not in self.rerun:
                self.rerun.add(task_id)
                self.lost[task_id] = task
                self.results[task_id] = self.pool.apply_async(worker.run_task, (task,))
            else:
                reports.append(failed_report(task))
        return reports

    def alive_pids(self) -> set[int]:
        return {process.pid for process in self.pool._pool if process.exitcode is None}

    def sweep_temp_files(self) -> None:
        """Remove what dead workers were writing, in the folders of their tasks."""
        folders = set()
        for task in self.lost.values():
            folders.update([folder.src.path for folder in task.folders] if isinstance(task, FolderTask)
                           else (split(action.path)[0] for action in task.actions))
        cache = DirCache(self.dst_root)
        try:
            for folder in folders:
                try:
                    dir_fd = cache.get(folder)
                    for name in map(os.fsencode, os.listdir(dir_fd)):
                        if is_temp_name(name):
                            discard(name, dir_fd)
                except OSError:
                    pass  # the next run removes what is left
        finally:
            cache.close()
        self.lost.clear()

    def unstick(self) -> None:
        """A worker killed while it held one of the Pool's queue locks (an idle worker holds
        the task queue's while it waits) would stop every other worker for good. When tasks
        wait, no live worker runs one and nothing was heard for a while after a death, the
        lock's holder is dead: release it for them."""
        if not (self.deaths and self.results) or time.monotonic() - self.last_news < STUCK_S:
            return
        alive = self.alive_pids()
        used = min(self.slots_used.value, SLOTS)
        if any(self.slots[2 * slot] in alive and self.slots[2 * slot + 1] >= 0 for slot in range(used)):
            return  # a task is running: its worker is not stuck on a lock
        release_locks_of_dead(self.pool)
        self.last_news = time.monotonic()

    def close(self) -> None:
        """Let the workers finish and leave; stop them if they do not."""
        self.pool.close()
        self._stop_pool(CLOSE_WAIT_S)

    def abort(self) -> None:
        """Stop at once: the workers remove their temporary files as they stop."""
        self._stop_pool(0)

    def _stop_pool(self, wait_s: float) -> None:
        """Never blocks for long: Pool.terminate and Pool.join wait forever for a worker that
        missed its SIGTERM or for a lock a dead worker held."""
        pool = self.pool
        pool._worker_handler.join(wait_s)  # after close() it leaves once every result is in
        if pool._worker_handler.is_alive():
            pool._worker_handler._state = pool._task_handler._state = multiprocessing.pool.TERMINATE
            pool._change_notifier.put(None)
            pool._worker_handler.join()  # no worker is started after this
        workers = list(pool._pool)
        wait_for_exit(workers, time.monotonic() + wait_s)
        if stop_processes(workers, STOP_GRACE_S):
            self.lost.update(self.tasks)  # a killed worker could not remove its temporary file
        release_locks_of_dead(pool)
        pool.terminate()
        if self.lost:
            self.sweep_temp_files()
        self._release()

    def _release(self) -> None:
        """Stop the manager: it has carried every report, and keeps nothing to clean up (its
        socket is abstract), so a signal does. Wait for it only briefly: after a big copy an
        exit can take seconds in the kernel (measured here: 0.8-2.7 s, a thread caught in
        memory reclaim while gigabytes are written back), and a stopped or stuck manager must
        not hang the end of a run. One that is slow to go is killed and reaped in the
        background; it dies with the master at the latest (PR_SET_PDEATHSIG)."""
        manager, process = self.manager, self.manager._process
        if not self.abstract_socket:
            manager.shutdown()  # a socket in a folder of its own: only it removes them
            return
        manager.shutdown.cancel()  # multiprocessing's own shutdown talks to it and waits
        manager._state.value = multiprocessing.managers.State.SHUTDOWN
        multiprocessing.managers.BaseProxy._address_to_local.pop(manager._address, None)
        if process.exitcode is not None:
            return
        process.terminate()
        process.join(MANAGER_EXIT_S)
        if process.exitcode is None:
            process.kill()
            multiprocessing.process._children.discard(process)  # or the exit would join it
            threading.Thread(target=process.join, daemon=True).start()


def manager_address() -> str | None:
    """On Linux an abstract socket: no file or folder in /tmp that a manager killed with the
    master (kill -9) would leave behind; connecting still needs the run's secret key."""
    if not sys.platform.startswith("linux"):
        return None
    return f"\0mirror-{os.getpid()}-{secrets.token_hex(8)}"


def wait_for_exit(processes: list, deadline: float) -> None:
    while (alive := [p.sentinel for p in processes if p.exitcode is None]) and time.monotonic() < deadline:
        wait(alive, deadline - time.monotonic())


def stop_processes(processes: list, grace_s: float) -> bool:
    """SIGTERM, again every 0.2 s (one that lands just before a blocking call is only seen
    at the next signal), then SIGKILL after `grace_s`; True when one had to be killed."""
    deadline = time.monotonic() + grace_s
    killed = False
    while alive := [p for p in processes if p.exitcode is None]:  # exitcode reaps: the pid stays ours
        late = time.monotonic() >= deadline
        for process in alive:
            try:
                os.kill(process.pid, signal.SIGKILL if late else signal.SIGTERM)
            except ProcessLookupError:
                pass
        killed = killed or late
        wait([process.sentinel for process in alive], 0.2)
    return killed


def release_locks_of_dead(pool: multiprocessing.pool.Pool) -> None:
    """Release the Pool's queue locks if a dead worker holds them (nobody alive holds one
    for more than a moment while tasks wait, or once the workers are gone)."""
    for lock in (pool._inqueue._rlock, pool._outqueue._wlock):
        lock.acquire(timeout=0.2)  # free: taken here; held by the dead: not, and
        lock.release()             # released for them either way


def failed_report(task: Task) -> WorkerReport:
    """The final report of a task whose worker died twice: every entry in it failed."""
    error = OSError(errno.EIO, WORKER_DIED)
    if isinstance(task, Batch):
        return WorkerReport(task.id, tuple(Outcome.failed(a, error) for a in task.actions), 0, True)
    problems = tuple(Problem(folder.src.path, Severity.ERROR, WORKER_DIED + " folder", error)
                     for folder in task.folders)
    return WorkerReport(task.id, (), 0, True, FolderResult((), (), (), (), problems, 0, 0, 0))
