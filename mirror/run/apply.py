"""Carry out one action on DST; the only place where a failed entry becomes a record."""
from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable, Iterator, Sequence
from itertools import islice
from typing import NamedTuple

from .. import core
from ..core import Ladder
from ..model import Action, Entry, Kind, Mode, NotWritten, Op, Outcome, SourceError, fills_dst
from ..plan.tree import PIN_FLAGS, LocalTree, SourceTree, as_tree
from ..options import Options
from .. import xattrs
from ..paths import DirCache, join, split, temp_name
from ..xattrs import scope_of
from ..plan.compare import wanted_perms
from ..plan.march import NAME_CHANGING
from .copyfile import PROC_FD, FileCopier, FolderFacts, discard
from .fastcopy import BIG_FILE, SPARSE_MIN, Copier, OnBytes

FREEING = frozenset({Op.DELETE, Op.CLEANUP})   # still done when DST is full
FOLDER_IN_THE_WAY = "a non-empty folder is in the way (sync replaces it, copy does not)"
# One call of the compiled core copies at most this much: a stop request waits for one call.
BATCH_FILES = 256
BATCH_BYTES = 8 << 20
COPY = Op.COPY
FILE = Kind.FILE


class Copied(NamedTuple):
    """Small files of one folder that one call of the compiled core copied: all done."""

    actions: Sequence[Action]
    sizes: list[int]


class Applier:
    """Applies actions with folders opened relative to the roots, never through DST's links."""

    def __init__(self, src: SourceTree | bytes, dst_root: bytes, mode: Mode, options: Options,
                 on_bytes: OnBytes = lambda nbytes: None) -> None:
        self.src = as_tree(src)
        self.dst_root = dst_root
        self.dst = DirCache(dst_root)
        self.links = DirCache(dst_root)  # where -H finds the first copy, kept open like the others
        self.options = options
        self.owner = bool(options.owner)
        self.on_bytes = on_bytes
        self.copier = Copier(dst_root, options.sparse)
        self.files = FileCopier(self.src, self.owner, self.copier, on_bytes, self.place)
        self.scope = self.files.scope = scope_of(options)  # -X, -A
        self.facts: tuple[bytes | None, FolderFacts] = (None, FolderFacts())
        self.dry_run = options.dry_run or mode is Mode.CHECK  # check: every action is a difference
        # Files below this size the compiled core may copy: neither a task of their own nor
        # asked for holes
        self.small = SPARSE_MIN if self.copier.sparse else BIG_FILE
        self.batched = (core.copy_files is not None and not self.dry_run and self.scope is None
                        and type(self.src) is LocalTree)  # a remote SRC brings its own copier
        self.keeps_folders = mode is Mode.COPY
        self.full: OSError | None = None   # the first ENOSPC, EDQUOT or EROFS met in DST
        self.handlers: dict[Op, Callable[[Action], int]] = {
            Op.COPY: self.copy, Op.MKDIR: self.mkdir, Op.SYMLINK: self.symlink,
            Op.SPECIAL: self.special, Op.HARDLINK: self.hardlink, Op.SET_META: self.set_meta,
            Op.DIR_META: self.dir_meta, Op.DELETE: self.delete, Op.CLEANUP: self.cleanup,
        }

    def apply(self, action: Action) -> Outcome:
        if self.dry_run:  # counted as done, so a dry run reports what a run would do
            return self.predict(action)
        if self.full is not None and action.op not in FREEING:
            return Outcome.failed(action, NotWritten(self.full.errno, self.full.strerror,
                                                     join(self.dst_root, action.path)))
        try:
            try:
                nbytes = self.run(action)
            except PermissionError as error:
                if error.errno != errno.EACCES or action.op not in NAME_CHANGING:
                    raise
                nbytes = self.run_in_writable_folder(action, error)
        except OSError as error:  # the worker boundary: one entry failed, the run goes on
            self.name_error(error, action.path)
            if fills_dst(error):
                self.full = error
            return Outcome.failed(action, error)
        return Outcome.done(action, nbytes)

    def apply_all(self, actions: Sequence[Action]) -> Iterator[Outcome | Copied]:
        """Every action's outcome, in order: the small files of one folder in one call of the
        compiled core (a Copied), everything else, and every file it declines, by `apply`."""
        if not self.batched:
            return map(self.apply, actions)
        return self.apply_batched(actions)

    def apply_batched(self, actions: Sequence[Action]) -> Iterator[Outcome | Copied]:
        start = 0
        while start < len(actions):
            stop = self.small_files(actions, start)
            if stop == start:
                yield self.apply(actions[start])
                start += 1
                continue
            run = actions[start:stop]
            parent = split(run[0].path)[0]
            try:
                src_fd, dst_fd = self.src.folder(parent), self.dst.get(parent)
            except OSError:  # the pure code meets it again and records it, file by file
                yield from map(self.apply, run)
                start = stop
                continue
            copier = self.copier
            method = Ladder.CLONE if copier.clone else Ladder.LOOP if copier.loop else Ladder.RANGE
            sizes = core.copy_files(src_fd, dst_fd, run, self.facts_of(parent), self.owner, method,
                                    self.files.temps.anonymous)
            declined = sizes[-1] < 0  # undone: the pure code redoes it, and decides what failed
            if declined:
                sizes.pop()
            if sizes:
                self.on_bytes(sum(sizes))
                yield Copied(run[:len(sizes)], sizes)
            start += len(sizes)
            if declined:
                yield self.apply(actions[start])
                start += 1

    def small_files(self, actions: Sequence[Action], start: int) -> int:
        """Where the run of small files of one folder from `start` that the compiled core may
        copy ends (BATCH_FILES, BATCH_BYTES at most); `start` if there is none."""
        if self.full is not None or self.files.copy_bytes is not self.copier:
            return start
        stop, nbytes, limit, parent = start, 0, self.small, None
        for action in islice(actions, start, start + BATCH_FILES):
            src, dst = action.src, action.dst
            if (action.op is not COPY or src.size >= limit or nbytes >= BATCH_BYTES
                    or (dst is not None and dst.kind is not FILE)):
                break
            folder = action.path.rpartition(b"/")[0]
            if parent is None:
                parent = folder
            elif folder != parent:
                break
            nbytes += src.size
            stop += 1
        return stop

    def name_error(self, error: OSError, path: bytes) -> OSError:
        """`error` with the whole path it was met at: SRC's for a SourceError, DST's otherwise."""
        error.filename = join(self.src.path if isinstance(error, SourceError) else self.dst_root, path)
        return error

    def predict(self, action: Action) -> Outcome:
        """A dry run's outcome: done, unless the real run would meet a non-empty folder in the
        way (copy never deletes one; sync deletes it first), so -n predicts the exit code."""
        dst = action.dst
        if (self.keeps_folders and dst is not None and dst.kind is Kind.DIR
                and action.op is not Op.MKDIR and action.op is not Op.DIR_META and action.op is not Op.DELETE):
            try:
                if os.listdir(self.dst.get(action.path)):
                    return Outcome.failed(action, OSError(errno.ENOTEMPTY, FOLDER_IN_THE_WAY))
            except OSError as error:
                return Outcome.failed(action, error)
        return Outcome.done(action, action.size)

    def run(self, action: Action) -> int:
        return self.handlers[action.op](action)

    def run_in_writable_folder(self, action: Action, refusal: PermissionError) -> int:
        """Without root, a read-only DST folder (SRC's 0555, copied by an earlier run) refuses
        every new or removed entry: as its owner, make it writable for us and try again, as
        rsync does. Its own permissions come back with its metadata after its contents (the
        planner plans that for every folder whose entries change), or at once if this fails."""
        if os.geteuid() == 0:
            raise refusal  # root writes anyway: the refusal is real (a read-only mount, ...)
        dir_fd = self.dst.get(split(action.path)[0])
        st = os.fstat(dir_fd)
        if st.st_uid != os.geteuid():
            raise refusal
        if st.st_mode & 0o300 == 0o300:  # opened meanwhile by a worker beside us: once more
            return self.run(action)      # (a refusal for another reason is raised again)
        os.fchmod(dir_fd, stat.S_IMODE(st.st_mode) | 0o300)
        try:
            return self.run(action)
        except BaseException:
            os.fchmod(dir_fd, stat.S_IMODE(st.st_mode))
            raise

    def close(self) -> None:
        self.src.close()
        self.dst.close()
        self.links.close()

    def copy(self, action: Action) -> int:
        parent, name = split(action.path)
        return self.files.copy(self.dst.get(parent), name, action.path, action.dst is None,
                               self.facts_of(parent), action.src)

    def facts_of(self, parent: bytes) -> FolderFacts:
        """What new files get in DST's folder `parent` (learned once a folder)."""
        if parent != self.facts[0]:
            self.facts = (parent, FolderFacts())
        return self.facts[1]

    def place(self, dir_fd: int, tmp: bytes, name: bytes, path: bytes) -> None:
        """Rename a finished temporary entry over `name`. An empty folder in the way goes; a
        non-empty one was planned for deletion (sync, before this runs) or stays (copy)."""
        try:
            os.replace(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        except (IsADirectoryError, FileExistsError):
            try:
                os.rmdir(name, dir_fd=dir_fd)
            except OSError as error:
                if error.errno in (errno.ENOTEMPTY, errno.EEXIST):
                    raise OSError(errno.ENOTEMPTY, FOLDER_IN_THE_WAY) from None
                raise
            os.replace(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)

    def create(self, action: Action, make: Callable[[bytes, int], None]) -> int:
        """Make an entry under a temporary name, set its metadata, rename it into place."""
        parent, name = split(action.path)
        dir_fd = self.dst.get(parent)
        tmp = temp_name()
        try:  # made inside the try: a signal just after it is made still removes it
            make(tmp, dir_fd)
            if action.op is not Op.HARDLINK:
                self.set_meta_by_name(dir_fd, tmp, action.src)
            self.place(dir_fd, tmp, name, action.path)
        except BaseException:
            discard(tmp, dir_fd)
            raise
        return 0

    def set_meta_by_name(self, dir_fd: int, name: bytes, src: Entry) -> None:
        """Owner, permissions and times of DST's entry `name`, never through a symlink.

        A path-based chmod follows links, so an entry swapped for a link to a file outside DST
        after the listing would have that file's mode changed. The entry is pinned with an
        O_PATH descriptor (opened without following) and changed through /proc's link to that
        very inode; a link itself is changed by name with the calls that never follow."""
        if src.kind is Kind.SYMLINK:  # Linux has no permissions on links
            if self.owner:
                os.chown(name, src.uid, src.gid, dir_fd=dir_fd, follow_symlinks=False)
            os.utime(name, ns=(src.mtime_ns, src.mtime_ns), dir_fd=dir_fd, follow_symlinks=False)
            if self.scope is not None:  # the link's own: through its pinned folder, not followed
                self.copy_attrs(src, b"/proc/self/fd/%d/%s" % (dir_fd, name), follow=False)
            return
        fd = os.open(name, PIN_FLAGS, dir_fd=dir_fd)
        try:
            if stat.S_IFMT(os.fstat(fd).st_mode) != stat.S_IFMT(src.mode):
                raise OSError(errno.ESTALE, "changed in the destination since it was listed")
            pinned = PROC_FD % fd
            if self.owner:
                os.chown(pinned, src.uid, src.gid)
            os.chmod(pinned, wanted_perms(src.mode, self.owner))
            os.utime(pinned, ns=(src.mtime_ns, src.mtime_ns))
            if self.scope is not None:  # after chmod: an access ACL sets the group bits
                self.copy_attrs(src, pinned)
        finally:
            os.close(fd)

    def copy_attrs(self, src: Entry, target, follow: bool = True) -> None:
        xattrs.write(target, self.src.xattrs(src.path, src.kind, self.scope), self.scope, follow)

    def symlink(self, action: Action) -> int:
        return self.create(action, lambda tmp, fd: os.symlink(action.src.target, tmp, dir_fd=fd))

    def special(self, action: Action) -> int:
        src = action.src
        if src.kind is Kind.FIFO:
            return self.create(action, lambda tmp, fd: os.mkfifo(tmp, 0o600, dir_fd=fd))
        kind = stat.S_IFMT(src.mode)
        return self.create(action, lambda tmp, fd: os.mknod(tmp, kind | 0o600, src.rdev, dir_fd=fd))

    def hardlink(self, action: Action) -> int:
        first_parent, first_name = split(action.link_to)
        first_fd = self.links.get(first_parent)
        return self.create(action, lambda tmp, fd: os.link(
            first_name, tmp, src_dir_fd=first_fd, dst_dir_fd=fd, follow_symlinks=False))

    def mkdir(self, action: Action) -> int:
        parent, name = split(action.path)
        dir_fd = self.dst.get(parent)
        if action.dst is not None:  # a type change: a file or link stands where a folder goes
            os.unlink(name, dir_fd=dir_fd)
        # Created private and writable; its own permissions come after its contents.
        try:
            os.mkdir(name, 0o700, dir_fd=dir_fd)
        except FileExistsError:
            # A task run again after its worker died finds its folder made: that is success.
            if not stat.S_ISDIR(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode):
                raise
        return 0

    def set_meta(self, action: Action) -> int:
        parent, name = split(action.path)
        self.set_meta_by_name(self.dst.get(parent), name, action.src)
        return 0

    def dir_meta(self, action: Action) -> int:
        src = action.src
        dir_fd = self.dst.get(action.path)
        # Planned for every folder whose entries may have changed (-H decides links later, in
        # the master); one fstat leaves a folder that is already right untouched.
        st = os.fstat(dir_fd)
        chowned = self.owner and (st.st_uid, st.st_gid) != (src.uid, src.gid)
        if chowned:
            os.fchown(dir_fd, src.uid, src.gid)
        perms = wanted_perms(src.mode, self.owner)
        if chowned or stat.S_IMODE(st.st_mode) != perms:  # a chown can clear setuid/setgid
            os.fchmod(dir_fd, perms)
        if st.st_mtime_ns != src.mtime_ns:
            os.utime(dir_fd, ns=(src.mtime_ns, src.mtime_ns))
        if self.scope is not None:
            self.copy_attrs(src, dir_fd)
        return 0

    def delete(self, action: Action) -> int:
        parent, name = split(action.path)
        remove_entry(self.dst.get(parent), name, action.dst.kind)
        return 0

    def cleanup(self, action: Action) -> int:
        parent, name = split(action.path)
        discard(name, self.dst.get(parent))
        return 0


def remove_entry(dir_fd: int, name: bytes, kind: Kind) -> None:
    try:
        if kind is Kind.DIR:
            os.rmdir(name, dir_fd=dir_fd)
        else:
            os.unlink(name, dir_fd=dir_fd)
    except FileNotFoundError:
        pass  # gone since it was listed: what the deletion wanted

