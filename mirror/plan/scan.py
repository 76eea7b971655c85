"""List one folder of a tree as Entries (lstat, never following links)."""
from __future__ import annotations

import errno
import os
import stat
import sys
import time
from itertools import islice
from typing import Any

from ..model import KIND_OF_FORMAT, Entry, Kind
from ..paths import DirCache, join
from .compare import same_file

PROBE_STATS = 4         # lstat calls timed at the start of each folder
SLOW_STAT_S = 0.0005    # slower than this on average: a remote store (local ones take ~2 us)
STAT_THREADS = 8
FILE = Kind.FILE
S_ISREG = stat.S_ISREG
new_tuple = tuple.__new__
os_stat = os.stat
Stat = Any   # an os.stat_result, or what a SourceTree's listing gives
# scandir on a descriptor gives str names, decoded as os.fsdecode does: encoded back the same
# way (not as UTF-8), names stay the bytes on disk under any locale. os.fsencode itself is a
# Python call; its two settings, looked up once, make it one C method call a name.
FS_ENCODING, FS_ERRORS = sys.getfilesystemencoding(), sys.getfilesystemencodeerrors()


def entry_from_stat(path: bytes, st: os.stat_result, target: bytes | None = None) -> Entry:
    mode = st.st_mode
    kind = FILE if S_ISREG(mode) else KIND_OF_FORMAT.get(stat.S_IFMT(mode), Kind.SOCKET)
    # Every field, in Entry's order, built by tuple.__new__ without the NamedTuple's Python
    # __new__: this runs for every entry of both trees.
    return new_tuple(Entry, (path, kind, mode, st.st_size if kind is FILE else 0, st.st_mtime_ns,
                             st.st_uid, st.st_gid, st.st_ino, st.st_dev, st.st_nlink, st.st_rdev,
                             target, st.st_ctime_ns, st.st_atime_ns))


def list_folder(folders: DirCache, rel: bytes, most: int | None = None) -> dict[bytes, os.stat_result] | list[bytes]:
    """lstat every entry of folder `rel` of a tree, by name. Raises OSError if it can't be read.
    With `most`, a folder of more entries gives their names alone, unsorted (it is split)."""
    return list_fd(folders.get(rel), most)


def list_fd(dir_fd: int, most: int | None = None) -> dict[bytes, os.stat_result] | list[bytes]:
    """list_folder's work, on the folder's descriptor.

    When the first lstat calls show a remote store (each a network round trip), the rest of
    the folder's are made by a few threads at once: a folder of 10,000 entries at 2 ms each
    is listed in 3 s instead of 20.
    """
    listing: dict[bytes, os.stat_result] = {}
    unstated: list[str] = []
    with os.scandir(dir_fd) as items:  # scandir works on its own duplicate of the fd
        probe = list(islice(items, PROBE_STATS))
        started = time.perf_counter()
        add_lstats(listing, probe)
        if time.perf_counter() - started > len(probe) * SLOW_STAT_S:
            unstated = [item.name for item in items]
        elif most is None:
            add_lstats(listing, items)
        else:
            add_lstats(listing, islice(items, max(0, most - len(probe))))
            names = list(listing)
            # too many: no lstat more, the names go to the tasks of its chunks (encoded one at
            # a time: a list of a million str names beside the bytes ones held 57 MB more)
            names.extend(item.name.encode(FS_ENCODING, FS_ERRORS) for item in items)
            if len(names) > len(listing):
                return names
    if most is not None and len(listing) + len(unstated) > most:
        return [*listing, *(name.encode(FS_ENCODING, FS_ERRORS) for name in unstated)]
    if unstated:
        add_slow_lstats(listing, dir_fd, unstated)
    return listing


def stat_names(dir_fd: int, names: list[bytes]) -> dict[bytes, os.stat_result]:
    """lstat the given names of a folder (a part of a big one), by name; names gone since
    they were listed are left out. A slow store gets the threads list_fd gives it."""
    listing: dict[bytes, os.stat_result] = {}
    probe = names[:PROBE_STATS]
    started = time.perf_counter()
    for name in probe:
        st = lstat_or_none(name, dir_fd)
        if st is not None:
            listing[name] = st
    rest = names[PROBE_STATS:]
    if time.perf_counter() - started > len(probe) * SLOW_STAT_S:
        add_slow_lstats(listing, dir_fd, rest)
    else:
        for name in rest:
            try:
                listing[name] = os_stat(name, dir_fd=dir_fd, follow_symlinks=False)
            except FileNotFoundError:
                continue
    return listing


# A folder pair's listing: (regular files found unchanged by the quick check and left out,
# SRC's other entries by name, DST's other entries by name).
Listed = tuple[int, dict[bytes, os.stat_result], dict[bytes, os.stat_result]]


def list_pair(src_fd: int, dst_fd: int, owner: bool | None,
              most: int | None = None) -> Listed | tuple[list[bytes], list[bytes]]:
    """lstat every entry of SRC's folder and of DST's (`dst_fd` -1: DST has none there).
    With `owner` not None, the regular files the quick check finds unchanged on both sides
    (same_file, owners compared if `owner`) are counted and left out of both listings:
    an unchanged file costs no object. A pair with more than `most` entries on either side
    gives the two folders' names alone, unsorted, instead (the folder is split)."""
    src = list_fd(src_fd, most)
    dst = list_fd(dst_fd, most) if dst_fd >= 0 else {}
    if type(src) is list or type(dst) is list:
        return (src if type(src) is list else list(src)), (dst if type(dst) is list else list(dst))
    return drop_unchanged(src, dst, owner), src, dst


def stat_pair(src_fd: int, dst_fd: int, src_names: list[bytes], dst_names: list[bytes],
              owner: bool | None) -> Listed:
    """list_pair for the given names of each side (a part of a big folder); names gone since
    they were listed are left out."""
    src = stat_names(src_fd, src_names)
    dst = stat_names(dst_fd, dst_names) if dst_fd >= 0 else {}
    return drop_unchanged(src, dst, owner), src, dst


def drop_unchanged(src: dict[bytes, Stat], dst: dict[bytes, Stat], owner: bool | None) -> int:
    """Leave the regular files the quick check finds unchanged out of both listings; how many."""
    if owner is None or not dst:
        return 0
    get = dst.get
    same = [name for name, st in src.items() if (other := get(name)) is not None and same_file(st, other, owner)]
    for name in same:
        del src[name], dst[name]
    return len(same)


def add_slow_lstats(listing: dict[bytes, os.stat_result], dir_fd: int, names: list) -> None:
    with stat_threads() as threads:
        stats = list(threads.map(lambda name: lstat_or_none(name, dir_fd), names))
    for name, st in zip(names, stats):
        if st is not None:
            listing[name if type(name) is bytes else name.encode(FS_ENCODING, FS_ERRORS)] = st


def add_lstats(listing: dict[bytes, os.stat_result], items) -> None:
    for item in items:
        try:
            listing[item.name.encode(FS_ENCODING, FS_ERRORS)] = item.stat(follow_symlinks=False)
        except FileNotFoundError:
            continue  # removed between listing and lstat: as if never listed


def lstat_or_none(name: str | bytes, dir_fd: int) -> os.stat_result | None:
    try:
        return os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return None


def stat_threads():
    """Threads for one slow folder's lstat calls, gone when it is listed: a process that forks
    (the master starts the pool, and may run tasks itself) must hold no threads when it does."""
    from concurrent.futures import ThreadPoolExecutor  # only remote stores need it
    return ThreadPoolExecutor(STAT_THREADS, thread_name_prefix="lstat")


def entry(folders: DirCache, rel: bytes, name: bytes, st: os.stat_result) -> Entry | None:
    """The Entry for one listed name, a symlink's target read here; None if the name vanished
    since it was listed. A link replaced by something else since is listed again."""
    if not stat.S_ISLNK(st.st_mode):
        return entry_from_stat(join(rel, name), st)
    dir_fd = folders.get(rel)
    try:
        return entry_from_stat(join(rel, name), st, os.readlink(name, dir_fd=dir_fd))
    except FileNotFoundError:
        return None
    except OSError as error:
        if error.errno != errno.EINVAL:  # EINVAL: not a link any more
            raise
    try:
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return None
    if stat.S_ISLNK(st.st_mode):
        raise OSError(errno.EAGAIN, "changed while it was listed")
    return entry_from_stat(join(rel, name), st)


def stat_root(root: bytes) -> Entry:
    """The tree's root folder itself, following a symlink the user named."""
    return entry_from_stat(b"", os.stat(root))

