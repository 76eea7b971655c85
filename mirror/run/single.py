"""A single file as SRC: its folder seen as a tree of that one file, and a run of its one action."""
from __future__ import annotations

import os

from ..model import Entry, Op, Problem, Severity
from ..plan.tree import LocalTree, Source
from .runner import Runner


class OneFile:
    """The SourceTree of one file in its folder, shown under DST's name (`cp a.txt b.txt`
    reads a.txt for the entry b.txt). Read like any local tree: relative to the folder's
    descriptor, with O_NOFOLLOW."""

    def __init__(self, folder: bytes, name: bytes, as_name: bytes) -> None:
        self.folder = LocalTree(folder)
        self.path = folder  # where the tree is, for messages
        self.name, self.as_name = name, as_name

    def __reduce__(self):
        return OneFile, (self.path, self.name, self.as_name)

    def root(self) -> Entry:
        return self.folder.root()

    def list(self, rel: bytes) -> dict[bytes, os.stat_result]:
        return {self.as_name: os.stat(self.name, dir_fd=self.folder.folder(b""), follow_symlinks=False)}

    def entry(self, rel: bytes, name: bytes, st: os.stat_result) -> Entry | None:
        found = self.folder.entry(b"", self.name, st)
        return None if found is None else found._replace(path=self.as_name)

    def open(self, path: bytes, listed: Entry | None) -> tuple[int, Entry]:
        fd, opened = self.folder.open(self.name, listed)
        return fd, opened._replace(path=self.as_name)

    def copier(self, local):
        return local

    def release(self, source: Source) -> None:
        self.folder.release(source)

    def is_regular(self, source: Source) -> bool:
        return self.folder.is_regular(source)

    def unchanged(self, source: Source, before: Entry) -> bool:
        return self.folder.unchanged(source, before)

    def digest(self, path: bytes) -> bytes:
        return self.folder.digest(self.name)

    def xattrs(self, path: bytes, kind, scope) -> dict[str, bytes]:
        return self.folder.xattrs(self.name, kind, scope)

    def prefetch(self, folders=(), files=()) -> None:
        pass

    def close(self) -> None:
        self.folder.close()


class FileRunner(Runner):
    """A run whose SRC is one file: its one decision is the whole plan, made here; the engine,
    retries, progress, signals and the report are a tree run's. Nothing is deleted, and DST's
    folder keeps its own metadata: only the file is SRC's."""

    def start(self) -> None:
        src_tree, dst_tree = self.planner.src, self.planner.dst
        name = src_tree.as_name
        try:
            src = src_tree.entry(b"", name, src_tree.list(b"")[name])
            if src is None:
                raise FileNotFoundError(2, "vanished before it was copied")
            try:
                st = os.stat(name, dir_fd=dst_tree.folder(b""), follow_symlinks=False)
            except FileNotFoundError:
                dst = None
            else:
                dst = dst_tree.entry(b"", name, st)
        except OSError as error:
            self.notice(Problem(name, Severity.ERROR, "cannot read", error))
            return
        planned = self.planner.decide_entry(name, src, dst)
        if isinstance(planned, Problem):
            self.notice(planned)
        elif planned.op is Op.SKIP:
            self.report.skip(planned)
        else:
            if planned.op is Op.COPY:
                self.discover(1, planned.size)
            self.add_to_batches([planned])
