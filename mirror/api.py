"""The library API: copy_tree, sync_tree and check_tree work without the command line."""
from __future__ import annotations

import os
from typing import Union

from dataclasses import replace

from .errors import MirrorError
from .model import EngineChoice, Mode, Problem, Severity, display
from .options import Options
from .plan.filters import Filter
from .plan.tree import SourceTree
from .report import Report
from .roots import FilePair, check_file_roots, check_roots, make_dst, refuse_emptying
from .run.engine import EngineFactory
from .run.pool import PoolEngine
from .run.worker import WorkerSpec
from .run.lock import lock_dst, unlock
from .run.runner import OnEvent, Runner
from .run.single import FileRunner, OneFile
from .xattrs import scope_of, supported


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
    pair = check_file_roots(src, dst)
    if pair is not None:
        return _run_file(pair, mode, options, on_event, engine)
    src_tree, dst_root = check_roots(src, dst, mode)
    Filter(options.excludes, options.includes)  # a bad pattern stops the run before DST is made
    if (options.xattrs or options.acls) and getattr(src_tree, "xattrs", None) is None:
        raise MirrorError(f"-X and -A need a local SRC: {display(src_tree.path)} cannot give "
                          "extended attributes or ACLs")
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
    report = _drive(Runner, src_tree, dst_root, mode, mode, options, on_event, engine, lock_fd)
    report.dirs_created += created
    return report


def _run_file(pair: FilePair, mode: Mode, options: Options, on_event: OnEvent | None,
              engine: EngineFactory) -> Report:
    """SRC is one file (cp's rules put it in DST's folder): copied like a file of a tree, by one
    worker. sync copies it too and deletes nothing: DST's other entries are not SRC's."""
    Filter(options.excludes, options.includes)  # refused as for a tree; a named file is not filtered
    options = replace(options, jobs=1, hard_links=False)
    src_tree = OneFile(pair.src_dir, pair.src_name, pair.dst_name)
    dst_root = pair.dst_dir
    if mode is Mode.CHECK:
        lock_fd = -1
    else:
        if not options.dry_run:
            make_dst(dst_root)  # it exists: this checks it can be written
        lock_fd = lock_dst(dst_root)  # one run per folder: a tree run there removes our temp files
    work = Mode.COPY if mode is Mode.SYNC else mode
    return _drive(FileRunner, src_tree, dst_root, mode, work, options, on_event, engine, lock_fd)


def _drive(runner: type[Runner], src_tree: SourceTree, dst_root: bytes, mode: Mode, work: Mode,
           options: Options, on_event: OnEvent | None, engine: EngineFactory, lock_fd: int) -> Report:
    """Start the engine on workers doing `work` and run `runner`; DST's lock is released after,
    however it ends."""
    try:
        options, notices = kept_by_dst(dst_root, mode, options)
        running = engine(WorkerSpec(src_tree, dst_root, work, options), lock_fd)
        return runner(src_tree, dst_root, mode, options, running, on_event, notices).run()
    finally:
        if lock_fd >= 0:
            unlock(lock_fd)


def kept_by_dst(dst_root: bytes, mode: Mode, options: Options) -> tuple[Options, tuple[Problem, ...]]:
    """-X, -A into a filesystem that cannot keep them (tmpfs without user xattrs, vfat): one
    warning for the run, and the option dropped, instead of an error for every entry."""
    scope = scope_of(options)
    if scope is None or mode is Mode.CHECK or options.dry_run:
        return options, ()
    kept = supported(dst_root, scope)
    if kept == scope:
        return options, ()
    lost = [what for what, asked, keeps in (("extended attributes (-X)", scope.xattrs, kept.xattrs),
                                            ("ACLs (-A)", scope.acls, kept.acls)) if asked and not keeps]
    problem = Problem(b"", Severity.WARNING, f"DST's filesystem keeps no {' or '.join(lost)}: "
                      "not copied")
    return replace(options, xattrs=kept.xattrs, acls=kept.acls), (problem,)


def copy_tree(src: Source, dst: str | bytes, options: Options | None = None,
              on_event: OnEvent | None = None, engine: EngineFactory = PoolEngine) -> Report:
    """Copy new and changed entries of SRC's contents into DST; never delete anything.
    A file as SRC is copied into DST when DST is a folder, as DST otherwise (as cp does).

    `engine` makes the engine that runs the work: the Pool of processes by default,
    mirror.InlineEngine to run it in this process."""
    return _run(src, dst, Mode.COPY, options or Options(), on_event, engine)


def sync_tree(src: Source, dst: str | bytes, options: Options | None = None,
              on_event: OnEvent | None = None, engine: EngineFactory = PoolEngine) -> Report:
    """Make DST identical to SRC: copy, then delete what SRC does not have (a file as SRC:
    as copy_tree, deleting nothing)."""
    return _run(src, dst, Mode.SYNC, options or Options(), on_event, engine)


def check_tree(src: Source, dst: str | bytes, options: Options | None = None,
               on_event: OnEvent | None = None, engine: EngineFactory = PoolEngine) -> Report:
    """Compare SRC and DST in parallel; report.differences lists what sync would change (a
    file as SRC: compared with DST, or with DST/NAME when DST is a folder)."""
    return _run(src, dst, Mode.CHECK, options or Options(), on_event, engine)
