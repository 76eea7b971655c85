"""Walk SRC and DST in lock step, one folder at a time, and yield the actions a run needs."""
from __future__ import annotations

import os
from bisect import bisect_left
from collections.abc import Iterator
from typing import NamedTuple

from ..model import Action, Entry, Kind, Mode, Op, Problem, Reason, Severity, Unchanged
from ..options import Options
from ..paths import is_temp_name, join, split
from . import scan
from .. import core
from .compare import decide, meta_differs
from .filters import Filter
from .tree import LocalTree, SourceTree, as_tree
from .. import xattrs
from ..xattrs import scope_of

class LinkedFile(NamedTuple):
    """-H: a multiply-linked SRC file, decided where every path to it is seen (decide_linked)."""

    src: Entry
    dst: Entry | None


class Chunk(NamedTuple):
    """A part of a big folder: its names on each side, joined by NUL (compact to hold and send)."""

    src: bytes
    dst: bytes


class BigFolder(NamedTuple):
    """A folder with too many entries for one task: planned in `chunks`, a task each; its own
    metadata is planned once every chunk is done (ChunkDone)."""

    src: Entry
    dst: Entry | None
    chunks: tuple[Chunk, ...]


class ChunkDone(NamedTuple):
    """A chunk of a big folder is planned; `changed`: it creates, replaces or removes names."""

    path: bytes
    changed: bool


Planned = Action | Problem | LinkedFile | Unchanged | BigFolder | ChunkDone
SPLIT_AT = 8192       # a folder with more entries than this on either side is split ...
CHUNK_NAMES = 4096    # ... into chunks of at most this many names a side
# Ops that create, replace or remove a name, and so change the mtime of the folder holding it.
NAME_CHANGING = frozenset({Op.MKDIR, Op.COPY, Op.SYMLINK, Op.SPECIAL, Op.HARDLINK, Op.DELETE, Op.CLEANUP})
DIR = Kind.DIR


class Planner:
    """Plans a run as a stream: folders are listed and decided one at a time, never the tree.

    Each folder's listing on both sides is complete before any of its entries is decided, so
    deletions are decided from whole listings. A folder's DIR_META action comes with its own
    listing; the runner applies those last, deepest first, after everything inside is written.
    """

    def __init__(self, src: SourceTree | bytes, dst: LocalTree | bytes, mode: Mode, options: Options) -> None:
        self.src = as_tree(src)
        self.dst = as_tree(dst)
        self.mode = mode
        self.options = options
        self.filter = Filter(options.excludes, options.includes)
        self.delete_excluded = options.delete_excluded and mode is not Mode.COPY
        self.same_content = self._same_content if options.checksum else None
        self.scope = scope_of(options)  # -X, -A: attributes compared too
        # Without filters, --checksum, -H, -X or -A, an unchanged regular file is known from
        # lstat alone (compare.same_file, done where the folders are listed): the owner
        # compared too (True), or not (False); None: every entry is decided here.
        simple = not (self.filter or options.checksum or options.hard_links or self.scope)
        self.quick_owner = bool(options.owner) if simple else None
        # (dev, ino) of a multiply-linked SRC file -> (its first path, DST's entry there if kept)
        self.links: dict[tuple[int, int], tuple[bytes, Entry | None]] = {}
        self.src_dev: int | None = None  # -x: SRC's filesystem; asked for when first needed
        self.split_at: int | None = None  # workers split folders bigger than this (SPLIT_AT)

    def tops(self) -> tuple[Entry, Entry | None]:
        """The two roots as entries; DST's is None in a dry run into a DST not made yet."""
        try:
            dst_top: Entry | None = self.dst.root()
        except FileNotFoundError:
            dst_top = None
        return self.src.root(), dst_top

    def plan(self) -> Iterator[Planned]:
        stack: list[tuple[Entry, Entry | None]] = [self.tops()]
        try:
            while stack:
                src_dir, dst_dir = stack.pop()
                for item in self.march_folder(src_dir, dst_dir, stack):
                    yield self.decide_linked(*item) if isinstance(item, LinkedFile) else item
        finally:
            self.close()

    def close(self) -> None:
        self.src.close()
        self.dst.close()

    def march_folder(self, src_dir: Entry, dst_dir: Entry | None,
                     stack: list[tuple[Entry, Entry | None]], chunk: Chunk | None = None) -> Iterator[Planned]:
        """Plan one folder, or one chunk of a big one (its metadata is then planned by whoever
        gathers the ChunkDone of all its chunks); subfolders to plan next go on `stack`."""
        rel = src_dir.path
        if self.options.one_file_system and src_dir.dev != self.root_dev():
            # -x: a mount point inside SRC is created (rsync's way), its contents left alone on
            # both sides: nothing of another filesystem is copied, nothing in DST deleted
            yield from self.plan_dir_meta(src_dir, dst_dir, False)
            return
        try:
            listed = self.listings(rel, dst_dir is not None, chunk)
        except OSError as error:
            yield Problem(rel, Severity.ERROR, "cannot read folder", error)
            if chunk is not None:
                yield ChunkDone(rel, False)
            return
        if len(listed) == 2:
            yield BigFolder(src_dir, dst_dir, chunks_of(*listed))
            return
        unchanged, src_listing, dst_listing = listed
        if unchanged:  # the common case of a re-run, decided without building entries
            yield Unchanged(unchanged)
        changed = False
        subfolders = []
        for name in sorted(src_listing):
            src_st = src_listing[name]
            dst_st = dst_listing.pop(name, None)
            try:
                src = self.src.entry(rel, name, src_st)
                dst = self.dst.entry(rel, name, dst_st) if dst_st is not None else None
            except OSError as error:
                yield Problem(join(rel, name), Severity.ERROR, "cannot read", error)
                continue
            if src is None:
                yield Problem(join(rel, name), Severity.WARNING, "vanished before it was copied")
                continue
            if self.filter and self.filter.excludes(src.path, src.kind is DIR):
                if dst is not None and self.delete_excluded:  # as if SRC did not have it
                    for planned in self.plan_extra(name, dst):
                        yield planned
                        changed = True
                continue
            if dst is not None and dst.kind is DIR and src.kind is not DIR and self.mode is Mode.SYNC:
                # A folder in the way is deleted like any other: its entries are counted, and
                # only after the copying (the runner holds the replacement back till then).
                in_the_way = list(self.plan_removal(dst))
                if not in_the_way or type(in_the_way[-1]) is Problem:  # kept, or unreadable
                    yield (in_the_way[-1] if in_the_way and in_the_way[-1].severity is Severity.ERROR
                           else Problem(src.path, Severity.ERROR, "not replaced: the folder in its "
                                        "place holds excluded entries (--delete-excluded deletes them)"))
                    continue
                yield from in_the_way
            planned = self.decide_entry(name, src, dst)
            if planned is not None:
                yield planned
                if type(planned) is LinkedFile or (type(planned) is Action
                                                   and planned.op in NAME_CHANGING):
                    changed = True
            if src.kind is DIR and not is_temp_name(name):
                subfolders.append((src, dst if dst is not None and dst.kind is Kind.DIR else None))
        for name in sorted(dst_listing):
            try:
                dst = self.dst.entry(rel, name, dst_listing[name])
            except OSError as error:
                yield Problem(join(rel, name), Severity.ERROR, "cannot read", error)
                continue
            for planned in self.plan_extra(name, dst) if dst is not None else ():
                yield planned
                changed = True
        stack.extend(reversed(subfolders))
        if chunk is None:
            yield from self.plan_dir_meta(src_dir, dst_dir, changed)
        else:
            yield ChunkDone(rel, changed)

    def listings(self, rel: bytes, dst_there: bool, chunk: Chunk | None
                 ) -> scan.Listed | tuple[list[bytes], list[bytes]]:
        """Both sides' listings of folder `rel` (or of a chunk's names), the regular files the
        quick check finds unchanged counted and left out; or, past split_at entries, the
        names alone. Local trees are read by descriptors (the compiled core's loop, when built)."""
        owner = self.quick_owner
        src, dst = self.src, self.dst
        if type(src) is LocalTree:
            src_fd, dst_fd = src.folder(rel), dst.folder(rel) if dst_there else -1
            if chunk is not None:
                return core.stat_pair(src_fd, dst_fd, names_of(chunk.src), names_of(chunk.dst), owner)
            return core.list_pair(src_fd, dst_fd, owner, self.split_at)
        src_listing = src.list(rel)
        dst_listing = dst.list(rel) if dst_there else {}
        return scan.drop_unchanged(src_listing, dst_listing, owner), src_listing, dst_listing

    def decide_entry(self, name: bytes, src: Entry, dst: Entry | None) -> Planned | None:
        """What SRC's entry needs, or None when a folder's own listing decides its metadata."""
        if is_temp_name(name):
            return Problem(src.path, Severity.UNCOPIABLE, "not copied: mirror uses this name for temporary files")
        if src.kind is Kind.SOCKET:
            return Problem(src.path, Severity.UNCOPIABLE, "socket, not copied")
        if src.kind is Kind.DEVICE and os.geteuid() != 0:
            return Problem(src.path, Severity.UNCOPIABLE, "device file, not copied: that needs root")
        if self.options.hard_links and src.nlink > 1 and src.kind is not DIR:
            return LinkedFile(src, dst)  # files, and links to FIFOs, devices and symlinks too
        try:
            op, reason = decide(src, dst, self.options.owner, self.same_content)
            if src.kind is DIR and op is not Op.MKDIR:
                return None  # the folder's own listing decides its metadata
            if op is Op.SKIP and self.scope is not None:
                attrs = self.attrs_differ(src, dst)
                if attrs is not None:
                    op, reason = Op.SET_META, attrs
        except OSError as error:
            return Problem(src.path, Severity.ERROR, "cannot compare", error)
        return Action(op, src.path, reason, src, dst)

    def decide_linked(self, src: Entry, dst: Entry | None) -> Action | Problem:
        """-H: the first path of a multiply-linked file is copied, the others linked to it."""
        key = (src.dev, src.ino)
        first = self.links.get(key)
        if first is None:
            try:
                op, reason = decide(src, dst, self.options.owner, self.same_content)
            except OSError as error:
                return Problem(src.path, Severity.ERROR, "cannot compare", error)
            self.links[key] = (src.path, None if op is Op.COPY else dst)
            return Action(op, src.path, reason, src, dst)
        first_path, first_dst = first
        if (first_dst is not None and dst is not None and dst.kind is src.kind
                and (dst.dev, dst.ino) == (first_dst.dev, first_dst.ino)):
            return Action(Op.SKIP, src.path, Reason.UNCHANGED, src, dst)
        reason = Reason.MISSING if dst is None else Reason.LINKED
        return Action(Op.HARDLINK, src.path, reason, src, dst, link_to=first_path)

    def plan_extra(self, name: bytes, dst: Entry) -> Iterator[Planned]:
        """An entry only DST has: a leftover temporary file, or (sync) deletions."""
        if is_temp_name(name):  # check lists it too: the next copy or sync removes it
            yield Action(Op.CLEANUP, dst.path, Reason.STALE_TEMP, None, dst)
        elif self.mode is not Mode.COPY:
            yield from self.plan_removal(dst)

    def plan_removal(self, top: Entry) -> Iterator[Planned]:
        """Deletions of DST's `top` and everything below it, deepest first: the one place that
        decides what leaves DST, whether SRC lacks it or a folder is in the way of a file.

        Excluded entries are kept, and so are the folders that hold them, with a warning at
        the top one (rsync's "cannot delete non-empty directory"), unless --delete-excluded.
        Nothing below an excluded folder is looked at."""
        keep = self.filter if self.filter and not self.delete_excluded else None
        if keep is not None and keep.excludes(top.path, top.kind is DIR):
            return
        holding: set[bytes] = set()   # folders that hold a kept entry
        stack: list[tuple[Entry, bool]] = [(top, False)]
        try:
            while stack:
                item, listed = stack.pop()
                if item.kind is DIR and not listed:
                    stack.append((item, True))
                    for _, child in sorted(self.scan_dst(item.path).items(), reverse=True):
                        if keep is not None and keep.excludes(child.path, child.kind is DIR):
                            holding.add(item.path)
                        else:
                            stack.append((child, False))
                elif item.path in holding:
                    holding.add(split(item.path)[0])
                else:
                    yield Action(Op.DELETE, item.path, Reason.EXTRA, None, item)
        except OSError as error:
            yield Problem(top.path, Severity.ERROR, "cannot list folder to delete it", error)
            return
        if top.path in holding:
            yield Problem(top.path, Severity.WARNING, "kept: holds excluded entries "
                          "(--delete-excluded deletes them)")

    def plan_dir_meta(self, src_dir: Entry, dst_dir: Entry | None, changed: bool) -> Iterator[Planned]:
        if dst_dir is None:
            reason: Reason | None = Reason.MISSING
        else:
            reason = meta_differs(src_dir, dst_dir, self.options.owner)
            if reason is None and self.scope is not None:
                try:
                    reason = self.attrs_differ(src_dir, dst_dir)
                except OSError as error:
                    yield Problem(src_dir.path, Severity.ERROR, "cannot compare", error)
            if reason is None and changed and self.mode is not Mode.CHECK:
                reason = Reason.MTIME  # writing inside the folder will change its mtime
        if reason is not None and not (self.mode is Mode.CHECK and dst_dir is None):
            yield Action(Op.DIR_META, src_dir.path, reason, src_dir, dst_dir)

    def attrs_differ(self, src: Entry, dst: Entry) -> Reason | None:
        """-X, -A: Reason.XATTRS or Reason.ACLS when the entries' attributes differ."""
        which = xattrs.differ(self.src.xattrs(src.path, src.kind, self.scope),
                              self.dst.xattrs(dst.path, dst.kind, self.scope))
        return None if which is None else Reason.ACLS if which == "acls" else Reason.XATTRS

    def root_dev(self) -> int:
        if self.src_dev is None:
            self.src_dev = self.src.root().dev
        return self.src_dev

    def _same_content(self, src: Entry, dst: Entry) -> bool:
        return self.src.digest(src.path) == self.dst.digest(dst.path)

    def scan_dst(self, rel: bytes) -> dict[bytes, Entry]:
        """The Entries of DST's folder `rel` (those still there), by name."""
        listed = ((name, self.dst.entry(rel, name, st)) for name, st in self.dst.list(rel).items())
        return {name: item for name, item in listed if item is not None}


def names_of(joined: bytes) -> list[bytes]:
    return joined.split(b"\0") if joined else []


def chunks_of(src_names: list[bytes], dst_names: list[bytes]) -> tuple[Chunk, ...]:
    """A big folder's names cut into chunks in name order, both sides at the same names, at
    most CHUNK_NAMES of each side a chunk: a name both sides have is in one chunk, so each
    chunk's deletions are decided from complete listings of its range. The cuts are every
    CHUNK_NAMES-th name of each side (no pass over every name in Python)."""
    src_names.sort()
    dst_names.sort()
    cuts = sorted(set(src_names[CHUNK_NAMES::CHUNK_NAMES] + dst_names[CHUNK_NAMES::CHUNK_NAMES]))
    chunks, src_at, dst_at = [], 0, 0
    for cut in cuts:
        src_end, dst_end = bisect_left(src_names, cut, src_at), bisect_left(dst_names, cut, dst_at)
        chunks.append(Chunk(b"\0".join(src_names[src_at:src_end]), b"\0".join(dst_names[dst_at:dst_end])))
        src_at, dst_at = src_end, dst_end
    chunks.append(Chunk(b"\0".join(src_names[src_at:]), b"\0".join(dst_names[dst_at:])))
    return tuple(chunks)


def plan(src: SourceTree | bytes, dst: LocalTree | bytes, mode: Mode, options: Options) -> Iterator[Planned]:
    """The actions that make DST match SRC for `mode`, as a stream."""
    return Planner(src, dst, mode, options).plan()
