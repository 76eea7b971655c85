"""The library API: copy_tree, sync_tree and check_tree work without the command line."""
from __future__ import annotations

import os
from typing import Union

from .model import EngineChoice, Mode
from .options import Options
from .plan.filters import Filter
from .plan.tree import SourceTree
from .report import Report
from .roots import check_roots, make_dst, refuse_emptying
from .run.engine import EngineFactory
from .run.pool import PoolEngine
from .run.worker import WorkerSpec
from .run.lock import lock_dst, unlock
from .run.runner import OnEvent, Runner


# SRC: a folder's path, or any SourceTree (a remote one, a test's tree in memory).
Source = Union[str, bytes, os.PathLike, SourceTree]


def engine_for(choice: EngineChoice) -> EngineFactory:
    """The engine --engine names; MirrorError (before anything is written) for MPI outside an
    MPI job of two ranks or more, or for a job started without mpi4py.futures."""
    if choice is EngineChoice.POOL:
        return PoolEngine
    from .run import mpi  # imports no mpi4py: only the engine does, when it starts
    if choice is EngineChoice.MPI:
        mpi.require_job()
        return mpi.MPIEngine
    return mpi.MPIEngine if mpi.job_size() > 1 else PoolEngine


def _run(src: Source, dst: str | bytes, mode: Mode, options: Options, on_event: OnEvent | None,
         engine: EngineFactory) -> Report:
    src_tree, dst_root = check_roots(src, dst, mode)
    Filter(options.excludes, options.includes)  # a bad pattern stops the run before DST is made
    if mode is Mode.SYNC and not options.allow_empty_src:
        refuse_emptying(src_tree, dst_root)
    created = False
    if mode is Mode.CHECK:
        lock_fd = -1  # check only reads
    elif options.dry_run:
        lock_fd = lock_dst(dst_root) if os.path.isdir(dst_root) else -1
    else:
        created = make_dst(dst_root)
        lock_fd = lock_dst(dst_root)
    try:
        running = engine(WorkerSpec(src_tree, dst_root, mode, options), lock_fd)
        report = Runner(src_tree, dst_root, mode, options, running, on_event).run()
        report.dirs_created += created
        return report
    finally:
        if lock_fd >= 0:
            unlock(lock_fd)


def copy_tree(src: Source, dst: str | bytes, options: Options | None = None,
              on_event: OnEvent | None = None, engine: EngineFactory = PoolEngine) -> Report:
    """Copy new and changed entries of SRC's contents into DST; never delete anything.

    `engine` makes the engine that runs the work: the Pool of processes by default,
    mirror.InlineEngine to run it in this process."""
    return _run(src, dst, Mode.COPY, options or Options(), on_event, engine)


def sync_tree(src: Source, dst: str | bytes, options: Options | None = None,
              on_event: OnEvent | None = None, engine: EngineFactory = PoolEngine) -> Report:
    """Make DST identical to SRC: copy, then delete what SRC does not have."""
    return _run(src, dst, Mode.SYNC, options or Options(), on_event, engine)


def check_tree(src: Source, dst: str | bytes, options: Options | None = None,
               on_event: OnEvent | None = None, engine: EngineFactory = PoolEngine) -> Report:
    """Compare SRC and DST in parallel; report.differences lists what sync would change."""
    return _run(src, dst, Mode.CHECK, options or Options(), on_event, engine)
