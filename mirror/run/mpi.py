"""The MPI engine: tasks run on the other ranks of an MPI job, through mpi4py.futures (extra `mpi`)."""
from __future__ import annotations

import importlib.util
import os
import signal
import sys
import time
from collections import deque
from typing import NamedTuple

from ..errors import STOP_SIGNALS, MirrorError, raise_stop
from .engine import DEPTH, EngineFailure, Message, Task
from .messages import WorkerReport
from .worker import Worker, WorkerSpec

TYPE_CHECKING = False  # concurrent.futures costs every run 3 ms: imported with mpi4py, in a job
if TYPE_CHECKING:
    from concurrent.futures import Future

LAUNCH = "mpiexec -n N python -m mpi4py.futures -m mirror ..."
IN_FLIGHT = 2            # bundles a rank: one it runs, one ready for the first rank that frees
MIN_BUNDLE_S = 0.2       # work a bundle carries at least: handing one out costs ~0.5 ms here
MASTER_SHARE_S = 0.005   # and this much a rank, so that rank 0 stays under ~10% busy handing
                         # them out (~1 s a bundle at 200 ranks)
MAX_BUNDLE = 1024        # tasks in one bundle
LEARN = 0.3              # weight of the latest bundle in the estimate of a task's duration
STOP_WAIT_S = 5.0        # how long a stop waits for the bundles the ranks are running
LAUNCHER_SIZES = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE")   # set in each rank by mpiexec and srun

# mpi4py.futures has no public way to ask "is this rank 0 of `python -m mpi4py.futures`?";
# checked on mpi4py 4.0 and 4.1 (tests/test_mpi.py fails, naming it, if a version moves it).
PRIVATE_NAMES = {
    "mpi4py.futures._core.SharedPool": "the pool of the job's other ranks that `python -m "
                                       "mpi4py.futures` starts in rank 0 (None anywhere else)",
}


def job_size() -> int:
    """The ranks of the MPI job whose rank 0 this process is, started by `python -m
    mpi4py.futures`; 1 outside one. Never starts MPI: it looks at what the launcher loaded."""
    core = sys.modules.get("mpi4py.futures._core")
    if core is not None:
        if not hasattr(core, "SharedPool"):
            raise MirrorError("this mpi4py has no mpi4py.futures._core.SharedPool: mirror cannot "
                              "tell whether it runs in an MPI job (PRIVATE_NAMES, mirror/run/mpi.py)")
        if core.SharedPool is not None:
            return core.MPI.COMM_WORLD.Get_size()
    ranks = launcher_ranks()
    if ranks > 1:  # every rank runs the command line: each would copy the whole tree on its own
        raise MirrorError(f"started as one of {ranks} MPI ranks, but not through mpi4py.futures: "
                          f"launch as {LAUNCH}")
    return 1


def launcher_ranks() -> int:
    for name in LAUNCHER_SIZES:
        try:
            return int(os.environ[name])
        except (KeyError, ValueError):
            continue
    return 1


def require_job() -> None:
    """MirrorError unless this process is rank 0 of an MPI job of two ranks or more."""
    if job_size() > 1:
        return
    if importlib.util.find_spec("mpi4py") is None:
        raise MirrorError("--engine mpi needs mpi4py: pip install 'mirror[mpi]' (and an MPI: "
                          "the site's, or pip install mpich)")
    raise MirrorError(f"--engine mpi needs an MPI job of 2 ranks or more (rank 0 hands out the "
                      f"work, the others do it): launch as {LAUNCH}")


class Delivery(NamedTuple):
    """A bundle's result, rank -> rank 0: its tasks' reports, as a queue would have carried them."""

    rank: int
    reports: tuple[WorkerReport, ...]
    elapsed_s: float
    stopped: int    # the stop signal that ended the bundle early, or 0


class Bundler:
    """How tasks wait and travel in bundles: enough work in each to pay for its trip (about
    MIN_BUNDLE_S, more with many ranks), learnt from the durations of bundles that came back."""

    def __init__(self, width: int) -> None:
        self.width = width
        self.queue: deque[Task] = deque()
        self.task_s: float | None = None  # what a task takes, on average lately
        self.most = 1                     # tasks a bundle may hold so far (slow start, see learn)

    def size(self) -> int:
        """Tasks a bundle should hold."""
        if self.task_s is None:
            return 1
        target = max(MIN_BUNDLE_S, self.width * MASTER_SHARE_S)
        return max(1, min(self.most, int(target / max(self.task_s, 1e-6))))

    def take(self, free: int) -> list[tuple[Task, ...]]:
        """Bundles for `free` places: never more than an even share of what waits in one, so
        that every rank gets some while the walk is young and at the end of the run."""
        bundles = []
        most = self.size()
        while self.queue and free > 0:
            count = min(most, -(-len(self.queue) // free))
            bundles.append(tuple(self.queue.popleft() for _ in range(count)))
            free -= 1
        return bundles

    def learn(self, tasks: int, elapsed_s: float) -> None:
        """A bundle of `tasks` tasks took `elapsed_s` seconds on its rank."""
        per_task = elapsed_s / tasks
        self.task_s = per_task if self.task_s is None else (1 - LEARN) * self.task_s + LEARN * per_task
        # Bundles grow at most twofold from one that came back: the first tasks (the root
        # folder, a few small ones) can be far quicker than what follows, and a bundle sized on
        # them would hold much of the tree on one rank while the others wait.
        self.most = min(MAX_BUNDLE, max(self.most, 2 * tasks))


class MPIEngine:
    """Tasks run on the other ranks of the job; this process, rank 0, hands them out. A few
    tasks travel together as one bundle (Bundler), and their reports come back as the bundle's
    result: progress moves as bundles complete (no Manager process across nodes).

    MPI has no fault tolerance: a rank that dies ends the job (the launcher kills every rank,
    this one too), so no task is ever lost and run again. The atomic writes leave nothing
    partial under a final name, and a re-run completes the copy. A stop signal to any rank
    stops the run: each rank ends its task at the next safe point and reports what is in place.
    """

    def __init__(self, spec: WorkerSpec, lock_fd: int = -1) -> None:
        require_job()  # ranks are not forked: none holds a copy of the lock
        from mpi4py import futures  # the one import of mpi4py, when it is used
        self.futures = futures
        package = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        self.executor = futures.MPIPoolExecutor(initializer=start_rank, initargs=(spec,), main=False,
                                                path=[package])
        self.width = self.executor.num_workers  # waits until every rank has built its Worker
        if not self.width:
            raise MirrorError("the ranks of the MPI job could not start their workers")
        self.bundler = Bundler(self.width)
        self.running: dict[Future, tuple[Task, ...]] = {}
        self.in_flight = 0            # tasks in the running bundles
        self.ranks: set[int] = set()
        self.held: list[Message] = []  # reports that came with a stop, for abort() to hand over

    @property
    def pending(self) -> int:
        return len(self.bundler.queue) + self.in_flight

    @property
    def depth(self) -> int:
        """Enough submitted tasks to fill every rank's bundles, and the next ones."""
        return max(DEPTH, (IN_FLIGHT + 1) * self.bundler.size())

    @property
    def workers_used(self) -> int:
        return len(self.ranks)

    def submit(self, task: Task) -> None:
        self.bundler.queue.append(task)  # bundled when the runner next asks for reports

    def receive(self, timeout: float) -> list[Message]:
        self.dispatch()
        if not self.running:
            return []
        done, _ = self.futures.wait(self.running, timeout, return_when=self.futures.FIRST_COMPLETED)
        messages: list[Message] = []
        stopped = 0
        for future in done:
            delivery = self.settle(future)
            messages.extend(delivery.reports)
            stopped = stopped or delivery.stopped
        if stopped:  # as if this process had the signal: raised once the reports are counted
            self.held.extend(messages)
            raise_stop(stopped, None)
            messages, self.held = self.held, []
        self.dispatch()  # the ranks work on while the runner takes the reports in
        return messages

    def settle(self, future: Future) -> Delivery:
        bundle = self.running.pop(future)
        self.in_flight -= len(bundle)
        try:
            delivery = future.result()  # a worker's bug (not an OSError) is raised here
        except self.futures.BrokenExecutor as error:
            raise EngineFailure(f"the MPI pool of ranks broke ({error})") from None
        self.ranks.add(delivery.rank)
        if not delivery.stopped:
            self.bundler.learn(len(bundle), delivery.elapsed_s)
        return delivery

    def dispatch(self) -> None:
        for bundle in self.bundler.take(IN_FLIGHT * self.width - len(self.running)):
            self.running[self.executor.submit(run_bundle, bundle)] = bundle
            self.in_flight += len(bundle)

    def close(self) -> list[Message]:
        self.executor.shutdown(wait=True)  # every bundle is in: the runner has nothing pending
        return []

    def abort(self) -> list[Message]:
        """Drop the bundles not yet sent; wait a while for those the ranks run (a stop signal
        reached them too, under mpiexec or srun: they end at their next safe point)."""
        self.bundler.queue.clear()
        self.executor.shutdown(wait=False, cancel_futures=True)
        done, _ = self.futures.wait(self.running, STOP_WAIT_S)
        messages, self.held = self.held, []
        for future in done:
            if not future.cancelled() and future.exception() is None:
                messages.extend(self.settle(future).reports)
        self.running.clear()
        self.in_flight = 0
        return messages


# The rank side: what runs in every rank but rank 0.

_worker: Worker | None = None    # set by start_rank, once in each rank
_broken: Exception | None = None  # why it could not be set
_rank = -1
_busy = False
_stop = 0                         # the first stop signal this rank got


def start_rank(spec: WorkerSpec) -> None:
    """The pool's initializer, once in every rank: its stop signals, and its Worker."""
    global _worker, _broken, _rank, _stop
    from mpi4py import MPI
    _rank, _stop = MPI.COMM_WORLD.Get_rank(), 0  # a library may run one job after another
    for signum in STOP_SIGNALS:
        signal.signal(signum, stop_rank)
    try:
        _worker = Worker(spec)
    except Exception as error:  # raised by the first bundle: the run ends with it
        _broken = error


def run_bundle(tasks: tuple[Task, ...]) -> Delivery:
    global _busy
    if _worker is None:
        raise _broken
    reports: list[WorkerReport] = []
    started = time.perf_counter()
    _busy = True
    try:
        for task in tasks:
            if _stop:
                break
            _worker.run(task, reports.append)
    except SystemExit:  # stopped at a safe point: what is in place is reported
        _worker.flush()
    finally:
        _busy = False
    return Delivery(_rank, tuple(reports), time.perf_counter() - started, _stop)


def stop_rank(signum, frame) -> None:
    """SIGTERM, SIGINT or SIGHUP (mpiexec and srun pass them to every rank): the task under way
    ends at its next safe point (a file's temporary file is removed), and rank 0 stops the run
    when it sees the signal in the bundle's result. The rank itself stays: if it left, MPI
    would end the job before rank 0 could count what is in place."""
    global _stop
    if not _stop:
        _stop = signum
        if _busy and _worker is not None:
            _worker.request_stop()
