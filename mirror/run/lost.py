"""What the runner does about workers that died: their tasks' reports, and their temporary files."""
from __future__ import annotations

import errno
import os

from ..model import Outcome, Problem, Severity
from ..plan.march import ChunkDone
from ..paths import DirCache, is_temp_name, split
from .copyfile import discard
from .engine import Task
from .folders import FolderResult, FolderTask
from .messages import Batch, WorkerReport
from .parts import Part, PartDone


WORKER_DIED = "a worker process died while doing this"


def failed_report(task: Task) -> WorkerReport:
    """The final report of a task whose worker died twice: every entry in it failed."""
    error = OSError(errno.EIO, WORKER_DIED)
    if isinstance(task, Batch):
        return WorkerReport(task.id, tuple(Outcome.failed(a, error) for a in task.actions), 0, True)
    if isinstance(task, Part):  # the file fails with it, once its other parts are in
        return WorkerReport(task.id, (), 0, True, PartDone(task.action.path, 0, error))
    problems = tuple(Problem(folder.src.path, Severity.ERROR, WORKER_DIED + " folder", error)
                     for folder in task.folders)
    chunks_done = tuple(ChunkDone(folder.src.path, False) for folder in task.folders if folder.chunk)
    return WorkerReport(task.id, (), 0, True, FolderResult((), (), (), (), problems, (), chunks_done, 0, 0, 0))


def sweep_temp_files(dst_root: bytes, tasks: list[Task]) -> None:
    """Remove what dead workers were writing, in the folders of their tasks."""
    folders = set()
    for task in tasks:
        folders.update([folder.src.path for folder in task.folders] if isinstance(task, FolderTask)
                       else (split(action.path)[0] for action in task.actions))
    cache = DirCache(dst_root)
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
