"""Copy one regular file: open, copy bytes, set metadata on the descriptor, then give it its name."""
from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable

from ..model import Entry, SourceError
from ..plan.tree import SourceTree
from ..paths import temp_name
from .fastcopy import BIG_FILE, CopyBytes, OnBytes

WRITE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
ANONYMOUS_FLAGS = os.O_WRONLY | getattr(os, "O_TMPFILE", 0) | os.O_CLOEXEC
NO_TMPFILE = frozenset({errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL})  # "not on this filesystem"
PROC_FD = "/proc/self/fd/%d"


class SourceChanged(SourceError):
    """SRC's file changed while it was copied; the runner tries it again (--retries)."""


class StaleListing(SourceChanged):
    """SRC's file changed between its listing and its copy: copied again, from a fresh fstat."""


class FolderFacts:
    """What a file created in one DST folder gets: its owner, and the permission bits each
    requested mode gives. Learned from the first such file (one fstat), never predicted:
    umask, default ACLs, setgid folders and mount options (grpid, NFS squashing, CIFS uid=)
    all change them. No call is then spent setting what a new file already has (on a network
    filesystem each fchown or fchmod is a round trip or two)."""

    __slots__ = ("owner", "modes")

    def __init__(self) -> None:
        self.owner: tuple[int, int] | None = None
        self.modes: dict[int, int] = {}

    def learn(self, fd: int, requested: int) -> tuple[tuple[int, int], int]:
        """(owner, permission bits) of the new file `fd`, created with mode `requested`."""
        got = self.modes.get(requested)
        if got is None:  # the owner is learned with the first mode
            st = os.fstat(fd)
            self.owner = (st.st_uid, st.st_gid)
            got = self.modes[requested] = stat.S_IMODE(st.st_mode)
        return self.owner, got


def set_meta(fd: int, src: Entry, owner: bool, perms: int,
             created: tuple[tuple[int, int], int]) -> None:
    """Owner first (chown clears setuid), then permissions `perms`, then times, all on the
    descriptor; `created` is the (owner, permission bits) the new file got."""
    if owner and (src.uid, src.gid) != created[0]:
        os.fchown(fd, src.uid, src.gid)
    if perms != created[1]:  # created without setuid/setgid/sticky: chown cannot clear them
        os.fchmod(fd, perms)
    os.utime(fd, ns=(src.atime_ns, src.mtime_ns))


class TempFiles:
    """Where a file's bytes go before they get their name in DST.

    A new file (its name free in DST) is written to an anonymous O_TMPFILE inode and then
    linked under its name: atomic like a rename, one directory operation cheaper (measured
    here: 63 us a file instead of 88), and a killed run leaves nothing behind. A replaced file,
    a big one (a visible name shows where the space goes while it grows) or a filesystem
    without O_TMPFILE gets a hidden temporary name that is renamed over DST's name.
    """

    def __init__(self) -> None:
        self.anonymous = hasattr(os, "O_TMPFILE") and os.path.isdir(PROC_FD.rsplit("/", 1)[0])
        self.linked = False  # until one anonymous file got its name, a refusal means "not here"

    def open(self, dir_fd: int, new: bool, perms: int, tmp: bytes) -> tuple[int, bool, int]:
        """A descriptor to write to, whether it was created under the temporary name `tmp`
        (not: an anonymous file), and the mode it was created with. A named one is private
        (0600) while it is written; an anonymous one can be opened by nobody else, so it
        starts with its final permissions."""
        if new and self.anonymous:
            mode = perms & 0o777
            try:
                return os.open(".", ANONYMOUS_FLAGS, mode, dir_fd=dir_fd), False, mode
            except OSError as error:
                if error.errno not in NO_TMPFILE:
                    raise
                self.anonymous = False
        return os.open(tmp, WRITE_FLAGS, 0o600, dir_fd=dir_fd), True, 0o600

    def link(self, fd: int, dir_fd: int, name: bytes, tmp: bytes) -> bool:
        """Give an anonymous file its name; if the name was taken meanwhile, link it as `tmp`
        to be renamed over it instead (True). Raises NoAnonymousFiles if this filesystem (or a
        /proc without the link) will not link them: the file is then copied again, named."""
        try:
            try:
                os.link(PROC_FD % fd, name, dst_dir_fd=dir_fd)
                named = False
            except FileExistsError:
                os.link(PROC_FD % fd, tmp, dst_dir_fd=dir_fd)
                named = True
        except OSError as error:
            if self.linked:
                raise
            self.anonymous = False
            raise NoAnonymousFiles(error.errno, error.strerror) from None
        self.linked = True
        return named


class NoAnonymousFiles(OSError):
    """Anonymous files cannot be linked here; caught by FileCopier, never reported."""


class FileCopier:
    """Copies one regular file into a temporary file, then gives it DST's name."""

    def __init__(self, src: SourceTree, owner: bool, copy_bytes: CopyBytes, on_bytes: OnBytes,
                 place: Callable[[int, bytes, bytes, bytes], None]) -> None:
        self.src = src
        self.owner = owner
        self.perm_bits = 0o7777 if owner else 0o1777  # setuid/setgid only with their owner
        self.copy_bytes = src.copier(copy_bytes)  # a remote tree brings its own
        self.release = src.release
        self.on_bytes = on_bytes
        self.place = place
        self.temps = TempFiles()
        self.counted = 0  # bytes the current attempt has reported so far
        self.restarts = 0  # copies begun again because their source changed
        self.stopping = False  # a stop was asked for: the copy under way ends at its next chunk

    def count(self, nbytes: int) -> None:
        if self.stopping:
            raise SystemExit(128 + 15)  # the temporary file is removed on the way out
        self.counted += nbytes
        self.on_bytes(nbytes)

    def copy(self, dst_dir_fd: int, name: bytes, path: bytes, new: bool, facts: FolderFacts,
             listed: Entry | None) -> int:
        """Copy SRC's `name`; `place(dir_fd, tmp, name, path)` renames a named temporary file
        over DST's name.

        The temporary file is removed on every failure, so DST's old version stays whole. A
        file that changed while it was read fails with SourceChanged (the runner retries it
        later): DST never gets the old mtime with new bytes. With `listed` (the lstat of the
        listing) no fstat is spent before the copy (a round trip on a network filesystem);
        if the file changed since its listing, it is copied again. `facts` are what a new
        file in this folder gets. Progress counts the bytes of a copy that fails or is
        redone back out, so it only ever adds up what was copied.
        """
        for _attempt in range(3):  # a stale listing and a refused anonymous link, once each
            self.counted = 0
            try:
                size = self.copy_once(dst_dir_fd, name, path, new, facts, listed)
                if size != self.counted:  # a small file is counted once, when done
                    self.on_bytes(size - self.counted)
                return size
            except BaseException as error:
                if self.counted:
                    self.on_bytes(-self.counted)
                if isinstance(error, StaleListing):
                    listed = None
                    self.restarts += 1
                elif not isinstance(error, NoAnonymousFiles):  # that one: named from now on
                    raise
        raise SourceChanged(errno.EAGAIN, "changed while it was copied", path)

    def copy_once(self, dst_dir_fd: int, name: bytes, path: bytes, new: bool, facts: FolderFacts,
                  listed: Entry | None) -> int:
        src_fd, src = self.src.open(path, listed)
        # The temporary name is chosen before anything is created under it and removed on the
        # way out whatever happened: a signal raised between the create and a `try` would
        # otherwise leave the file behind.
        tmp, named = temp_name(), False
        try:
            perms = src.mode & self.perm_bits
            out, named, requested = self.temps.open(dst_dir_fd, new and src.size < BIG_FILE, perms, tmp)
            try:
                created = facts.learn(out, requested)
                try:
                    self.copy_bytes(src_fd, out, src.size, self.count)
                except OSError:
                    if listed is not None and not self.src.is_regular(src_fd):
                        raise SourceError(errno.EINVAL, "no longer a regular file", path) from None
                    raise
                if not self.src.unchanged(src_fd, src):
                    changed = StaleListing if listed is not None else SourceChanged
                    raise changed(errno.EAGAIN, "changed while it was copied", path)
                set_meta(out, src, self.owner, perms, created)
                if not named:
                    named = self.temps.link(out, dst_dir_fd, name, tmp)
            finally:
                os.close(out)
            if named:
                self.place(dst_dir_fd, tmp, name, path)
        except BaseException:
            discard(tmp, dst_dir_fd)  # a missing one is fine: the name may never have been made
            raise
        finally:
            self.release(src_fd)
        return src.size


def discard(tmp: bytes, dir_fd: int) -> None:
    try:
        os.unlink(tmp, dir_fd=dir_fd)
    except FileNotFoundError:
        pass

