"""Check SRC and DST before a run writes anything: every refusal here is a usage error (exit 2)."""
from __future__ import annotations

import os
import stat
from typing import NamedTuple

from .errors import MirrorError
from .model import Kind, Mode, display
from .plan.tree import LocalTree, SourceTree

_show = display  # names in messages are escaped like every name shown to people


def _inside(inner: bytes, outer: bytes) -> bool:
    return inner.startswith(outer.rstrip(b"/") + b"/")


def check_roots(src: str | bytes | SourceTree, dst: str | bytes, mode: Mode) -> tuple[SourceTree, bytes]:
    """SRC as a tree and DST as an absolute path, or MirrorError saying why the pair is refused.
    SRC may be a path (a LocalTree is made of it) or a SourceTree of any kind."""
    # An unset shell variable ("$DST") must never mean the current folder, as rsync and cp refuse.
    if not isinstance(src, (str, bytes, os.PathLike)):
        tree, src_root = src, None
        try:
            kind = tree.root().kind
        except OSError as error:
            raise MirrorError(f"source {_show(tree.path)}: {error.strerror}") from None
        if kind is not Kind.DIR:
            raise MirrorError(f"source {_show(tree.path)} is not a folder")
    else:
        if not src:
            raise MirrorError("empty source argument")
        src_root = check_src(os.path.abspath(os.fsencode(src)))
        tree = LocalTree(src_root)
    if not dst:
        raise MirrorError("empty destination argument")
    dst_root = os.path.abspath(os.fsencode(dst))
    try:
        dst_st = os.stat(dst_root)
    except FileNotFoundError:
        dst_st = None
    except OSError as error:
        raise MirrorError(f"destination {_show(dst_root)}: {error.strerror}") from None
    if dst_st is not None and not stat.S_ISDIR(dst_st.st_mode):
        raise MirrorError(f"destination {_show(dst_root)} exists and is not a folder")
    if src_root is not None:
        refuse_overlap(src_root, dst_root, mode)
    return tree, dst_root


class FilePair(NamedTuple):
    """A single-file SRC and where it goes: the folders that hold them and their names."""

    src_dir: bytes
    src_name: bytes
    dst_dir: bytes
    dst_name: bytes


def check_file_roots(src: str | bytes | SourceTree, dst: str | bytes) -> FilePair | None:
    """None unless SRC is a local regular file; then where it goes, by cp's rules (DST an
    existing folder: DST/NAME; anything else: DST itself, in a folder that must exist), or
    MirrorError saying why the pair is refused."""
    if not isinstance(src, (str, bytes, os.PathLike)) or not src:
        return None
    path = os.path.abspath(os.fsencode(src))
    try:
        src_st = os.stat(path)
    except OSError:
        return None  # check_roots says why
    if not stat.S_ISREG(src_st.st_mode):
        return None
    if not os.access(path, os.R_OK):
        raise MirrorError(f"source {_show(path)}: permission denied")
    src_dir, src_name = os.path.split(os.path.realpath(path))  # a link SRC names: followed
    if not dst:
        raise MirrorError("empty destination argument")
    dst_path = os.path.abspath(os.fsencode(dst))
    try:
        into = stat.S_ISDIR(os.stat(dst_path).st_mode)
    except FileNotFoundError:
        into = False  # missing, or a dangling link: replaced by the file
    except OSError as error:
        raise MirrorError(f"destination {_show(dst_path)}: {error.strerror}") from None
    if into:
        dst_dir, dst_name = dst_path, src_name
    elif os.fsencode(dst).endswith(b"/"):  # names a folder, as cp reads it
        missing = "does not exist" if not os.path.lexists(dst_path) else "is not a folder"
        raise MirrorError(f"destination folder {_show(dst_path)} {missing}")
    else:
        dst_dir, dst_name = os.path.split(dst_path)
        try:
            folder = stat.S_ISDIR(os.stat(dst_dir).st_mode)
        except OSError as error:
            raise MirrorError(f"destination's folder {_show(dst_dir)}: {error.strerror}") from None
        if not folder:
            raise MirrorError(f"destination's folder {_show(dst_dir)} is not a folder")
    try:
        dst_st = os.stat(os.path.join(dst_dir, dst_name), follow_symlinks=False)
    except FileNotFoundError:
        dst_st = None
    except OSError as error:
        raise MirrorError(f"destination {_show(dst_path)}: {error.strerror}") from None
    if dst_st is not None and (dst_st.st_dev, dst_st.st_ino) == (src_st.st_dev, src_st.st_ino):
        raise MirrorError("source and destination are the same file")
    return FilePair(src_dir, src_name, dst_dir, dst_name)


def check_src(src_root: bytes) -> bytes:
    try:
        st = os.stat(src_root)
    except OSError as error:
        raise MirrorError(f"source {_show(src_root)}: {error.strerror}") from None
    if not stat.S_ISDIR(st.st_mode):
        raise MirrorError(f"source {_show(src_root)} is not a folder")
    if not os.access(src_root, os.R_OK | os.X_OK):
        raise MirrorError(f"source {_show(src_root)}: permission denied")
    return src_root


def refuse_overlap(src_root: bytes, dst_root: bytes, mode: Mode) -> None:
    real_src, real_dst = os.path.realpath(src_root), os.path.realpath(dst_root)
    if real_src == real_dst:
        raise MirrorError("source and destination are the same folder")
    if mode is not Mode.CHECK and _inside(real_dst, real_src):
        raise MirrorError("destination is inside the source: it would copy itself")
    if mode is Mode.SYNC and _inside(real_src, real_dst):
        raise MirrorError("source is inside the destination: sync would delete it")


def make_dst(dst_root: bytes) -> bool:
    """Create DST (and its parents) if missing; True if it was created."""
    if os.path.isdir(dst_root):
        # A read-only DST that we own (SRC's 0555 root, copied by an earlier run) is opened up
        # while entries inside it change, like any folder of the tree; one on a read-only
        # filesystem, or someone else's, cannot be.
        if not os.access(dst_root, os.W_OK | os.X_OK) and (
                os.statvfs(dst_root).f_flag & os.ST_RDONLY or os.stat(dst_root).st_uid != os.geteuid()):
            raise MirrorError(f"destination {_show(dst_root)} is not writable")
        return False
    try:
        os.makedirs(dst_root)
    except OSError as error:
        raise MirrorError(f"cannot create destination {_show(dst_root)}: {error.strerror}") from None
    return True


def holds_anything(src: SourceTree) -> bool:
    """Whether SRC's root has an entry: a local one reads its first name only (a root of a
    million entries, listed with their lstat, held 700 MB)."""
    if type(src) is LocalTree:
        with os.scandir(src.folder(b"")) as items:
            return next(items, None) is not None
    return bool(src.list(b""))


def refuse_emptying(src: SourceTree, dst_root: bytes) -> None:
    """sync from an empty SRC (an unmounted disk, say) must not wipe a non-empty DST."""
    try:  # the tree stays open: the run reads it next (a remote one keeps its connection)
        if holds_anything(src):
            return
    except OSError as error:
        raise MirrorError(f"source {_show(src.path)}: {error.strerror}") from None
    try:
        with os.scandir(dst_root) as dst_items:
            if next(dst_items, None) is None:
                return
    except FileNotFoundError:
        return
    raise MirrorError(f"source {_show(src.path)} is empty and the destination is not: refusing to "
                      "delete everything in it (pass --allow-empty-src if that is what you want)")
