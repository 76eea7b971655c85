"""List one folder of a tree as Entries (lstat, never following links)."""
from __future__ import annotations

import os
import stat

from ..model import KIND_OF_FORMAT, Entry, Kind
from ..paths import DirCache, join


def entry_from_stat(path: bytes, st: os.stat_result, target: bytes | None = None) -> Entry:
    return Entry(
        path=path,
        kind=KIND_OF_FORMAT.get(stat.S_IFMT(st.st_mode), Kind.SOCKET),
        mode=st.st_mode,
        size=st.st_size if stat.S_ISREG(st.st_mode) else 0,
        mtime_ns=st.st_mtime_ns,
        uid=st.st_uid,
        gid=st.st_gid,
        ino=st.st_ino,
        dev=st.st_dev,
        nlink=st.st_nlink,
        rdev=st.st_rdev,
        target=target,
    )


def scan_folder(folders: DirCache, rel: bytes) -> dict[bytes, Entry]:
    """The entries of folder `rel` of a tree, by name. Raises OSError if it can't be read."""
    fd = folders.get(rel)
    entries = {}
    with os.scandir(fd) as listing:  # scandir works on its own duplicate of fd
        for item in listing:
            name = os.fsencode(item.name)
            try:
                st = item.stat(follow_symlinks=False)
                target = os.readlink(name, dir_fd=fd) if stat.S_ISLNK(st.st_mode) else None
            except FileNotFoundError:
                continue  # removed between listing and lstat: as if never listed
            entries[name] = entry_from_stat(join(rel, name), st, target)
    return entries


def stat_root(root: bytes) -> Entry:
    """The tree's root folder itself, following a symlink the user named."""
    return entry_from_stat(b"", os.stat(root))


def walk_post_order(folders: DirCache, top: Entry):
    """Yield `top` and everything below it, children before their folder, without recursion.

    An unreadable folder raises OSError from the generator.
    """
    stack: list[tuple[Entry, bool]] = [(top, False)]
    while stack:
        entry, expanded = stack.pop()
        if entry.kind is not Kind.DIR or expanded:
            yield entry
            continue
        stack.append((entry, True))
        children = scan_folder(folders, entry.path)
        stack.extend((child, False) for _, child in sorted(children.items(), reverse=True))
