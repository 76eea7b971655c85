"""The default engine: a multiprocessing Pool of workers reporting through a Manager queue."""
from __future__ import annotations

import gc
import multiprocessing
import multiprocessing.managers
import multiprocessing.pool
import os
import pickle
import queue as queues
import secrets
import signal
import sys
import threading
import time
from multiprocessing.connection import wait

from ..errors import STOP_SIGNALS, HeldStops
from .engine import DEPTH, EngineFailure, LostTask, Message, Task
from .messages import WorkerReport
from .worker import Worker, WorkerSpec

MANAGER_EXIT_S = 0.2   # how long the end of a run waits for the manager to be gone
QUEUE_DRAIN_S = 1.0    # how long a stop reads the reports stopped workers left
SLOTS = 4096   # one (pid, task id) pair per worker process started, replacements included
STUCK_S = 1.0        # no report for this long after a worker died: look for a lock it held
CLOSE_WAIT_S = 5.0   # idle workers leave on their own well within this
REAP_WAIT_S = 1.0    # a worker whose pipes closed has its exit status within this
STOP_GRACE_S = 5.0   # then SIGTERM, repeated; SIGKILL after this
PR_SET_PDEATHSIG = 1

# The private names of multiprocessing this engine uses, and why: each guarantee below has no
# public way in. Checked on CPython 3.10, 3.11, 3.12 and 3.13; tests/test_engines.py fails
# (it does not hang) when a Python moves one.
PRIVATE_NAMES = {
    "AsyncResult._set": "settle the result of a task whose worker was killed (the Pool waits forever)",
    "Pool._pool": "the worker processes, to see which died and to stop them",
    "Pool._worker_handler": "stop the thread that starts new workers before the workers are stopped",
    "Pool._task_handler": "the same, for the thread that hands out tasks",
    "Pool._change_notifier": "wake the worker handler so that it sees it must stop",
    "Pool._inqueue._rlock": "release the task queue's lock a killed idle worker held",
    "Pool._outqueue._wlock": "release the result queue's lock a killed worker held",
    "BaseManager._process": "stop the manager with a signal (its shutdown waits forever if it hangs)",
    "BaseManager._state": "mark it stopped, so that its finalizer does not talk to it again",
    "BaseManager._address": "forget the proxies' connections to a stopped manager",
    "BaseProxy._address_to_local": "the same",
    "process._children": "let the exit not wait for a manager killed and reaped in a thread",
}


class PoolEngine:
    """Workers in a multiprocessing Pool (fork), each reporting through a Manager().Queue().

    Keeps every fault guarantee: a killed worker's task is reported lost (the runner runs it
    again once), a killed manager ends the run, SIGTERM repeated then SIGKILL stops the
    workers, and no wait is unbounded."""

    depth = DEPTH
    workers_used = None  # not counted: a Pool replaces dead workers under new pids

    def __init__(self, spec: WorkerSpec, lock_fd: int = -1) -> None:
        self.width = spec.options.jobs
        context = multiprocessing.get_context("fork")
        held = HeldStops()  # until the helpers have their own handlers and can be stopped
        gc.freeze()  # so that the children's collector never writes to (and copies) our pages
        try:
            address = manager_address()
            self.abstract_socket = address is not None
            self.manager = multiprocessing.managers.SyncManager(address, ctx=context)
            self.manager.start(ignore_signals, (lock_fd, os.getpid()))
            self.queue = self.manager.Queue()
            # Each worker notes in shared memory which task it runs: a Pool silently replaces a
            # killed worker and never completes its task, so the master must find such tasks.
            self.slots = context.Array("q", 2 * SLOTS, lock=False)
            self.slots_used = context.Value("i", 0)
            self.pool = context.Pool(self.width, initializer=start_process,
                                     initargs=(self.queue, spec, lock_fd, os.getpid(), self.slots,
                                               self.slots_used))
        except BaseException:
            held.release()
            raise
        finally:
            gc.unfreeze()
        self.results: dict[int, multiprocessing.pool.AsyncResult] = {}
        self.tasks: dict[int, Task] = {}
        self.deaths = 0
        self.last_news = time.monotonic()
        try:
            held.release()  # a stop signal that came meanwhile is raised here
        except BaseException:
            self.abort()
            raise

    def submit(self, task: Task) -> None:
        self.results[task.id] = self.pool.apply_async(run_task, (task,))
        self.tasks[task.id] = task

    @property
    def pending(self) -> int:
        return len(self.results)

    def receive(self, timeout: float) -> list[Message]:
        messages: list[Message] = []
        try:  # one message a call: asking again only to hear "empty" would cost a round trip
            message = self.queue.get(timeout=timeout) if timeout > 0 else self.queue.get_nowait()
            messages.append(pickle.loads(message))
        except queues.Empty:
            pass
        except (EOFError, ConnectionError) as error:
            raise EngineFailure(f"lost the manager process that carries the workers' reports ({error!r})") from None
        if not messages:
            self.raise_worker_bug()
            messages.extend(self.lost_tasks())
            self.unstick()
        else:
            self.last_news = time.monotonic()
        for report in messages:
            if type(report) is WorkerReport and report.final:
                del self.results[report.task_id], self.tasks[report.task_id]
        return messages

    def raise_worker_bug(self) -> None:
        """A task that raised (not an OSError: a bug) never reports; surface it."""
        for result in list(self.results.values()):
            if result.ready() and not result.successful():
                result.get()

    def lost_tasks(self) -> list[LostTask]:
        """The tasks of workers that died: settled in the Pool's books, handed to the runner."""
        alive = self.alive_pids()
        lost = []
        for slot in range(min(self.slots_used.value, SLOTS)):
            pid, task_id = self.slots[2 * slot], self.slots[2 * slot + 1]
            if not pid or pid in alive:
                continue
            self.slots[2 * slot] = 0
            self.deaths += 1
            if task_id in self.results:
                # The Pool waits for a lost task forever (close/join would hang, and terminate
                # can block on a queue lock the dead worker held): mark its result settled.
                self.results.pop(task_id)._set(0, (True, None))
                lost.append(LostTask(self.tasks.pop(task_id)))
        return lost

    def alive_pids(self) -> set[int]:
        return {process.pid for process in self.pool._pool if process.exitcode is None}

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

    def close(self) -> list[Message]:
        """Let the workers finish and leave; stop them if they do not. Every task's final
        report is in: nothing is left on the queue."""
        self.pool.close()
        return self.stop(CLOSE_WAIT_S, drain=False)

    def abort(self) -> list[Message]:
        """Stop at once: the workers report what they finished and remove their temporary files."""
        return self.stop(0, drain=True)

    def stop(self, wait_s: float, drain: bool) -> list[Message]:
        """Never blocks for long: Pool.terminate and Pool.join wait forever for a worker that
        missed its SIGTERM or for a lock a dead worker held. Then the reports still queued,
        and the tasks of workers that had to be killed (their temporary files stayed)."""
        pool = self.pool
        pool._worker_handler.join(wait_s)  # after close() it leaves once every result is in
        if pool._worker_handler.is_alive():
            pool._worker_handler._state = pool._task_handler._state = multiprocessing.pool.TERMINATE
            pool._change_notifier.put(None)
            pool._worker_handler.join()  # no worker is started after this
        workers = list(pool._pool)
        wait_for_exit(workers, time.monotonic() + wait_s)
        killed = stop_processes(workers, STOP_GRACE_S)
        # A worker the handler started just before it stopped is stopped too: Pool.terminate
        # joins every worker it knows of, and would wait for that one forever.
        while late := [p for p in pool._pool if p not in workers]:
            workers.extend(late)
            killed = stop_processes(late, STOP_GRACE_S) or killed
        release_locks_of_dead(pool)
        pool.terminate()
        messages: list[Message] = self.queued() if drain else []
        if killed:
            messages.extend(LostTask(task) for task in self.tasks.values())
        self.release_manager()
        return messages

    def queued(self) -> list[Message]:
        """What the stopped workers reported last (a stop must count every entry in place).
        Read by a thread, for a second at most: a manager that cannot answer must not hang
        the stop (it is killed next, which ends the thread's wait)."""
        messages: list[Message] = []

        def drain() -> None:
            try:
                while True:
                    messages.append(pickle.loads(self.queue.get_nowait()))
            except (queues.Empty, EOFError, OSError):
                pass
        reader = threading.Thread(target=drain, daemon=True)
        reader.start()
        reader.join(QUEUE_DRAIN_S)
        return list(messages)

    def release_manager(self) -> None:
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


def running(processes: list) -> list:
    """Those still running. A process is gone when its sentinel is readable, even if its exit
    status can no longer be read (then exitcode stays None for good: a loop on it never ends)."""
    alive = [p for p in processes if p.exitcode is None]
    gone = set(wait([p.sentinel for p in alive], 0)) if alive else set()
    for process in alive:
        reap_by = time.monotonic() + REAP_WAIT_S
        while process.sentinel in gone and process.exitcode is None and time.monotonic() < reap_by:
            time.sleep(0.002)  # its status comes a moment after its pipes close (never join: it can block)
    return [p for p in alive if p.sentinel not in gone]


def wait_for_exit(processes: list, deadline: float) -> None:
    while (alive := running(processes)) and time.monotonic() < deadline:
        wait([p.sentinel for p in alive], deadline - time.monotonic())


def stop_processes(processes: list, grace_s: float) -> bool:
    """SIGTERM, again every 0.2 s (one that lands just before a blocking call is only seen
    at the next signal), then SIGKILL after `grace_s`; True when one had to be killed."""
    deadline = time.monotonic() + grace_s
    killed = False
    while alive := running(processes):  # exitcode reaps: the pid stays ours
        if time.monotonic() >= deadline + STOP_GRACE_S:
            return True  # killed and still not seen to go: never wait forever
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


# The process side: what runs in each Pool process (and, for ignore_signals, in the manager).

class PoolProcess:
    """This process's worker, the queue it reports on, and its slot in the shared array."""

    def __init__(self, queue, spec: WorkerSpec, slots, slot: int) -> None:
        self.queue, self.slots, self.slot = queue, slots, slot
        self.worker = Worker(spec)
        self.busy = False

    def emit(self, report: WorkerReport) -> None:
        # Pickled here, once: the manager then only stores bytes instead of unpickling and
        # pickling every outcome again on its way to the master.
        self.queue.put(pickle.dumps(report, pickle.HIGHEST_PROTOCOL))

    def run(self, task: Task) -> int:
        self.slots[self.slot + 1] = task.id  # the master reads this if we die
        self.busy = True
        try:
            self.worker.run(task, self.emit)
        except SystemExit:  # stopped: what is in place is counted (the master drains the queue)
            try:
                self.worker.flush()
            except (OSError, EOFError):
                pass  # the manager is gone: the run ends uncounted, as after kill -9
            raise
        self.busy = False
        self.slots[self.slot + 1] = -1
        return task.id


_process: PoolProcess | None = None   # set by start_process, once in each Pool process
_broken: Exception | None = None      # why it could not be set
_stopping = False


def start_process(queue, spec: WorkerSpec, lock_fd: int, master: int, slots, slots_used) -> None:
    """Pool initializer: signals, the death of the master, a slot, and the Worker; the queue
    proxy is passed once here, not with every task."""
    global _process
    ignore_signals(lock_fd, master, signal.SIGTERM, stop_on_sigterm)  # SIGTERM: the temporary file is removed
    with slots_used.get_lock():
        slot = 2 * (slots_used.value % (len(slots) // 2))
        slots_used.value += 1
    slots[slot], slots[slot + 1] = os.getpid(), -1
    try:
        _process = PoolProcess(queue, spec, slots, slot)
    except Exception as error:  # a bug: a Pool would start us again and again, for ever
        global _broken
        _broken = error


def run_task(task: Task) -> int:
    if _process is None:
        raise _broken  # the master surfaces it (raise_worker_bug) and the run ends
    return _process.run(task)


def stop_on_sigterm(signum, frame):
    """In a task, the worker stops at its next safe point: between two entries, or between two
    chunks of a file, whose temporary file is then removed; every entry in place is reported
    (the master repeats SIGTERM until we are gone, and kills a worker stuck in a call after a
    few seconds). Idle, or leaving (the Pool told us to), there is nothing to clean up: exit at
    once, without raising inside multiprocessing's own exit (a proxy's last message)."""
    global _stopping
    if _stopping:
        return
    _stopping = True
    if _process is not None and _process.busy:
        _process.worker.request_stop()
        return
    os._exit(128 + signum)


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
