"""Folder tasks: plan folders from both complete listings and do their small work at once."""
from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import NamedTuple

import sys

from ..model import Action, Entry, Kind, Op, Outcome, Problem, Status, Unchanged
from ..plan.march import BigFolder, Chunk, ChunkDone, LinkedFile, Planner
from .fastcopy import BIG_FILE

INLINE_COPIES = 512       # past this, a huge flat folder's files are handed back for batching
NOW = frozenset({Op.CLEANUP, Op.SYMLINK, Op.SPECIAL, Op.SET_META})   # and Op.COPY
COPY = Op.COPY
DIR = Kind.DIR


class Folder(NamedTuple):
    src: Entry
    dst: Entry | None       # None when DST has no folder there (yet)
    create: Action | None   # its MKDIR: done by the folder's own task, so that folders are
                            # created in parallel rather than one after another by their parent
    chunk: Chunk | None = None  # a part of a big folder: only these names


class FolderTask(NamedTuple):
    """One or a few folders for one worker (small folders travel together: fewer round trips)."""

    id: int
    folders: tuple[Folder, ...]


class FolderResult(NamedTuple):
    """What the master needs after a task: where to go next and what must wait for the end."""

    subfolders: tuple[Folder, ...]
    later: tuple[Action, ...]          # deletions, what replaces a folder, and folder metadata:
                                       # after all copying
    handoff: tuple[Action, ...]        # big files and the excess of huge folders: batched by the master
    linked: tuple[LinkedFile, ...]     # -H candidates: decided by the master, which sees every path
    problems: tuple[Problem, ...]
    splits: tuple[tuple[Entry, Entry | None, int], ...]  # big folders found: their chunk counts
    chunks_done: tuple[ChunkDone, ...]
    skipped: int                       # regular files found unchanged
    files: int                         # regular files to copy (for the progress total)
    nbytes: int


class Findings:
    """A task's result as it grows, folder by folder."""

    def __init__(self) -> None:
        self.subfolders: list[Folder] = []
        self.later: list[Action] = []
        self.handoff: list[Action] = []
        self.linked: list[LinkedFile] = []
        self.problems: list[Problem] = []
        self.splits: list[tuple[Entry, Entry | None, int]] = []
        self.chunks_done: list[ChunkDone] = []
        self.skipped = self.files = self.nbytes = 0

    def result(self) -> FolderResult:
        return FolderResult(tuple(self.subfolders), tuple(self.later), tuple(self.handoff),
                            tuple(self.linked), tuple(self.problems), tuple(self.splits),
                            tuple(self.chunks_done), self.skipped, self.files, self.nbytes)


def replaces_folder(action: Action) -> bool:
    """DST has a folder where this action puts something else: it waits for the deletions."""
    return action.dst is not None and action.dst.kind is DIR


def run_folders(task: FolderTask, planner: Planner, apply: Callable[[Action], Outcome],
                apply_all: Callable[[Sequence[Action]], Iterable], finished: Callable[[object], None]) -> FolderResult:
    """Run a folder task; `apply_all` does its small files (after every folder is planned)
    and `finished` hears every outcome either gives."""
    findings = Findings()
    planner.src.prefetch(folders=[folder.src.path for folder in task.folders])
    copies: list[Action] = []
    for folder in task.folders:
        run_folder(folder, planner, apply, finished, findings, copies)
    if copies:  # after every march of the task: a remote SRC asks for them all at once, and
        # its pipe does not run dry between two folders (one round trip each)
        planner.src.prefetch(files=[action.src for action in copies])
        for outcome in apply_all(copies):
            finished(outcome)
    return findings.result()


def run_folder(folder: Folder, planner: Planner, apply: Callable[[Action], Outcome],
               finished: Callable[[Outcome], None], found: Findings, copies: list[Action]) -> None:
    """Create the folder if it needs it, march it, and do its small work at once; its small
    files go to `copies`."""
    if folder.create is not None:
        outcome = apply(folder.create)
        finished(outcome)
        if outcome.status is not Status.DONE:
            return  # its contents would all fail the same way
    subfolders: list[tuple[Entry, Entry | None]] = []
    creates: dict[bytes, Action] = {}
    inline_copies = 0
    # A chunk of a big folder is already a share of it: all its files are copied here.
    most_inline = INLINE_COPIES if folder.chunk is None else sys.maxsize
    for item in planner.march_folder(folder.src, folder.dst, subfolders, folder.chunk):
        if type(item) is Unchanged:
            found.skipped += item.files
        elif type(item) is Action and item.op is COPY:  # the common case first
            size = item.src.size
            found.files += 1
            found.nbytes += size
            inline_copies += 1
            if item.dst is not None and item.dst.kind is DIR:  # replaces_folder, inlined: per file
                found.later.append(item)  # a folder in the way: replaced after the deletions
            elif size >= BIG_FILE or inline_copies > most_inline:
                found.handoff.append(item)
            else:
                copies.append(item)
        elif isinstance(item, Problem):
            found.problems.append(item)
        elif isinstance(item, LinkedFile):
            found.linked.append(item)
        elif type(item) is BigFolder:
            found.splits.append((item.src, item.dst, len(item.chunks)))
            found.subfolders.extend(Folder(item.src, item.dst, None, chunk) for chunk in item.chunks)
        elif type(item) is ChunkDone:
            found.chunks_done.append(item)
        elif item.op is Op.SKIP:
            found.skipped += item.src is not None and item.src.kind is Kind.FILE
        elif item.op is Op.MKDIR:
            creates[item.path] = item
        elif item.op in NOW and not replaces_folder(item):
            finished(apply(item))
        else:
            found.later.append(item)
    found.subfolders.extend(Folder(src, dst, creates.get(src.path)) for src, dst in subfolders)
