"""A folder task: plan one folder from both complete listings and do its small work at once."""
from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

from ..model import Action, Entry, Kind, Op, Outcome, Problem, Status
from ..plan.compare import UNCHANGED_FILE
from ..plan.march import LinkedFile, Planner

BIG_FILE = 16 << 20       # copied as a task of its own, so big files spread over workers
INLINE_COPIES = 512       # past this, a huge flat folder's files are handed back for batching
NOW = frozenset({Op.CLEANUP, Op.COPY, Op.SYMLINK, Op.SPECIAL, Op.SET_META})
EMPTY = ((), (), (), (), (), 0, 0, 0)

Subfolder = tuple  # (src Entry, dst Entry | None, the MKDIR action that creates it | None)


class FolderTask(NamedTuple):
    id: int
    src: Entry
    dst: Entry | None       # None when DST has no folder there (yet)
    create: Action | None   # the folder's own MKDIR: done first, by this task, so folders are
                            # created in parallel rather than one after another by their parent


class FolderResult(NamedTuple):
    """What the master needs after a folder: where to go next and what must wait for the end."""

    subfolders: tuple[Subfolder, ...]
    later: tuple[Action, ...]          # deletions and folder metadata: applied by the master, last
    handoff: tuple[Action, ...]        # big files and the excess of huge folders: batched by the master
    linked: tuple[LinkedFile, ...]     # -H candidates: decided by the master, which sees every path
    problems: tuple[Problem, ...]
    skipped: int                       # regular files found unchanged
    files: int                         # regular files to copy (for the progress total)
    nbytes: int


def run_folder(task: FolderTask, planner: Planner, apply: Callable[[Action], Outcome],
               finished: Callable[[Outcome], None]) -> FolderResult:
    """Create the folder if it needs it, march it, and do its small work at once."""
    if task.create is not None:
        outcome = apply(task.create)
        finished(outcome)
        if outcome.status is not Status.DONE:
            return FolderResult(*EMPTY)  # its contents would all fail the same way
    subfolders: list[tuple[Entry, Entry | None]] = []
    creates: dict[bytes, Action] = {}
    later, handoff, linked, problems = [], [], [], []
    skipped = files = nbytes = inline_copies = 0
    for item in planner.march_folder(task.src, task.dst, subfolders):
        if item is UNCHANGED_FILE:
            skipped += 1
        elif isinstance(item, Problem):
            problems.append(item)
        elif isinstance(item, LinkedFile):
            linked.append(item)
        elif item.op is Op.SKIP:
            skipped += item.src is not None and item.src.kind is Kind.FILE
        elif item.op is Op.MKDIR:
            creates[item.path] = item
        elif item.op in NOW:
            if item.op is Op.COPY:
                files += 1
                nbytes += item.size
                inline_copies += 1
                if item.size >= BIG_FILE or inline_copies > INLINE_COPIES:
                    handoff.append(item)
                    continue
            finished(apply(item))
        else:
            later.append(item)
    return FolderResult(tuple((src, dst, creates.get(src.path)) for src, dst in subfolders),
                        tuple(later), tuple(handoff), tuple(linked), tuple(problems),
                        skipped, files, nbytes)
