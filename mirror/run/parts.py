"""A big file copied by several workers at once: its data cut in parts, a task each.

The master makes the file's temporary file in DST at its full size (a hole, its blocks reserved
where the filesystem can and SRC has no holes), cuts SRC's data extents (SEEK_DATA/SEEK_HOLE:
a sparse image's holes are never read or written) into parts of PART_BYTES, and hands each
part to whichever worker is free; a worker writes its part at the same offsets. Once every
part is back, the master checks that SRC did not change, sets the metadata and gives the file
its name, or removes it: DST's old version stays whole until then, as with any file.
"""
from __future__ import annotations

import errno
import os
from typing import NamedTuple

from ..model import Action, Mode, Outcome
from ..paths import split, temp_name
from .apply import Applier
from .copyfile import WRITE_FLAGS, SourceChanged, discard, set_meta
from .fastcopy import SPARSE_MIN, has_holes, preallocate, seek

PART_BYTES = 64 << 20       # data a part copies: 8 parts a 512 MiB file
SPLIT_MIN = 2 * PART_BYTES  # smaller files are copied whole by one worker
PART_FLAGS = os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC

Extents = tuple[tuple[int, int], ...]   # (offset, length) of SRC's data, in order


class Part(NamedTuple):
    """A task: copy SRC's `extents` of the action's file into DST's temporary file `tmp`."""

    id: int
    action: Action
    tmp: bytes
    extents: Extents

    @property
    def actions(self) -> tuple[Action, ...]:  # what a lost task's report and sweep look at
        return (self.action,)


class PartDone(NamedTuple):
    """A worker's result for one Part: bytes written, or the error that stopped it."""

    path: bytes
    nbytes: int
    error: OSError | None


class Pending:
    __slots__ = ("action", "tmp", "left", "nbytes", "error")

    def __init__(self, action: Action, tmp: bytes, left: int) -> None:
        self.action, self.tmp, self.left = action, tmp, left
        self.nbytes, self.error = 0, None


def data_extents(fd: int, size: int, sparse: bool) -> list[tuple[int, int]]:
    """Where SRC's data is: the whole file, or, for a file with holes, each data extent."""
    if not (sparse and size >= SPARSE_MIN and has_holes(fd, size)):
        return [(0, size)]
    extents, done = [], 0
    while done < size:
        start = seek(fd, done, os.SEEK_DATA)
        if start is None or start >= size:
            break
        stop = min(seek(fd, start, os.SEEK_HOLE) or size, size)
        extents.append((start, stop - start))
        done = stop
    return extents


def cut(extents: list[tuple[int, int]], part_bytes: int) -> list[Extents]:
    """Extents grouped in parts of `part_bytes` of data (an extent may be cut in two)."""
    parts: list[Extents] = []
    current: list[tuple[int, int]] = []
    filled = 0
    for start, length in extents:
        while length:
            take = min(length, part_bytes - filled)
            current.append((start, take))
            filled, start, length = filled + take, start + take, length - take
            if filled == part_bytes:
                parts.append(tuple(current))
                current, filled = [], 0
    if current or not parts:  # an empty file, or all holes: one part, with nothing to copy
        parts.append(tuple(current))
    return parts


def splitting(src, dst_root: bytes, mode, options, width: int) -> SplitFiles | None:
    """The master's SplitFiles, where big files are split: two workers or more, a run that
    writes, and a SRC whose `open` gives descriptors (its copier(local) is `local`)."""
    if width < 2 or options.dry_run or mode is Mode.CHECK or src.copier(copy_descriptors) is not copy_descriptors:
        return None
    return SplitFiles(Applier(src, dst_root, mode, options))


def copy_descriptors(src_fd: int, dst_fd: int, size: int, on_bytes) -> int:
    """A stand-in copier: what a tree's copier(local) gives back when its files are descriptors."""
    raise NotImplementedError


class SplitFiles:
    """The master's side: starts split files, gathers their parts, finishes or removes them."""

    def __init__(self, applier: Applier) -> None:
        self.applier = applier
        self.pending: dict[bytes, Pending] = {}

    def start(self, action: Action) -> tuple[bytes, list[Extents]]:
        """Make the action's temporary file and cut SRC's data in parts: (its name, parts).
        Raises OSError (its filename set) when SRC cannot be read or DST written."""
        applier, path = self.applier, action.path
        parent, _ = split(path)
        tmp = temp_name()
        try:
            src_fd, src = applier.src.open(path, action.src)
            try:
                extents = data_extents(src_fd, src.size, applier.copier.sparse)
            finally:
                applier.src.release(src_fd)
            dir_fd = applier.dst.get(parent)
            out = os.open(tmp, WRITE_FLAGS, 0o600, dir_fd=dir_fd)
            try:
                os.ftruncate(out, src.size)
                if applier.copier.reserve and extents == [(0, src.size)]:
                    preallocate(out, src.size)  # a full disk fails the file before any part
            except BaseException:
                os.close(out)
                discard(tmp, dir_fd)
                raise
            os.close(out)
        except OSError as error:
            raise applier.name_error(error, path) from None
        parts = cut(extents, PART_BYTES)
        self.pending[path] = Pending(action, tmp, len(parts))
        return tmp, parts

    def part_done(self, done: PartDone) -> tuple[Outcome, int] | None:
        """Count a part in; once all are in: the file's outcome, and the bytes its parts
        reported (to be taken back from progress when it failed)."""
        pending = self.pending[done.path]
        pending.left -= 1
        pending.nbytes += done.nbytes
        pending.error = pending.error or done.error
        if pending.left:
            return None
        del self.pending[done.path]
        return self.finish(pending), pending.nbytes

    def finish(self, pending: Pending) -> Outcome:
        action, tmp, applier = pending.action, pending.tmp, self.applier
        parent, name = split(action.path)
        try:
            dir_fd = applier.dst.get(parent)
            try:
                if pending.error is not None:
                    raise pending.error
                self.check_unchanged(action)
                out = os.open(tmp, PART_FLAGS, dir_fd=dir_fd)
                try:
                    st = os.fstat(out)
                    src = action.src
                    set_meta(out, src, applier.owner, src.mode & applier.files.perm_bits,
                             ((st.st_uid, st.st_gid), 0o600))
                    if applier.scope is not None:
                        applier.copy_attrs(src, out)
                finally:
                    os.close(out)
                applier.place(dir_fd, tmp, name, action.path)
            except BaseException:
                discard(tmp, dir_fd)
                raise
        except OSError as error:
            return Outcome.failed(action, applier.name_error(error, action.path))
        return Outcome.done(action, action.src.size)

    def check_unchanged(self, action: Action) -> None:
        src_tree = self.applier.src
        src_fd, _ = src_tree.open(action.path, action.src)
        try:
            if not src_tree.unchanged(src_fd, action.src):
                raise SourceChanged(errno.EAGAIN, "changed while it was copied", action.path)
        finally:
            src_tree.release(src_fd)

    def abandon(self) -> None:
        """The run stops: remove every temporary file of a file not finished."""
        for pending in self.pending.values():
            try:
                discard(pending.tmp, self.applier.dst.get(split(pending.action.path)[0]))
            except OSError:
                pass  # DST's folder went: so did the file
        self.pending.clear()
        self.applier.close()


def copy_part(applier: Applier, part: Part, on_bytes) -> PartDone:
    """A worker's side: write one part into the file's temporary file; its bytes are taken
    back from progress if it fails."""
    action = part.action
    copied = 0

    def count(nbytes: int) -> None:
        nonlocal copied
        copied += nbytes
        on_bytes(nbytes)
    try:
        src_fd, _ = applier.src.open(action.path, action.src)
        try:
            out = os.open(part.tmp, PART_FLAGS, dir_fd=applier.dst.get(split(action.path)[0]))
            try:
                for start, length in part.extents:
                    if applier.copier.copy_extent(src_fd, out, start, length, count) < length:
                        raise SourceChanged(errno.EAGAIN, "changed while it was copied", action.path)
            finally:
                os.close(out)
        finally:
            applier.src.release(src_fd)
    except OSError as error:  # the worker boundary: the part failed, and with it the file
        if copied:
            on_bytes(-copied)
        return PartDone(action.path, 0, applier.name_error(error, action.path))
    return PartDone(action.path, copied, None)
