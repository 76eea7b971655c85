"""Which core runs the per-folder loops: the compiled mirror._core, or the pure-Python code."""
from __future__ import annotations

import enum
import os

from .model import Action, Entry, Symbol
from .plan import scan

FORCE_PURE = "MIRROR_PURE"   # set to anything but "" or "0": the pure-Python code runs


class Core(Symbol):
    C = "C"
    PYTHON = "Python"


class Ladder(enum.IntEnum):
    """fastcopy.Copier's method for a small file, as the compiled copy takes it."""

    CLONE = 0
    RANGE = 1
    LOOP = 2


def layout() -> dict:
    """The positions of the fields the compiled core reads of the records it is given, and
    the constants it must share with the pure code."""
    entry = ("mode", "size", "mtime_ns", "uid", "gid", "ctime_ns", "atime_ns")
    return {"Entry": {name: Entry._fields.index(name) for name in entry},
            "Action": {name: Action._fields.index(name) for name in ("path", "src", "dst")},
            "Ladder": {step.name: step.value for step in Ladder},
            "scan": {"PROBE_STATS": scan.PROBE_STATS}}


def choose():
    """(the compiled module or None, why): decided once, when mirror first needs it."""
    forced = os.environ.get(FORCE_PURE, "")
    if forced not in ("", "0"):
        return None, f"{FORCE_PURE}={forced}"
    try:
        from . import _core
    except ImportError as error:
        return None, f"no compiled core: {error}"
    if {key: _core.LAYOUT.get(key) for key in layout()} != layout():  # a stale build
        return None, "no compiled core: mirror._core was built for other records; reinstall mirror"
    return _core, "mirror._core"


_compiled, WHY = choose()
ACTIVE = Core.PYTHON if _compiled is None else Core.C
# None on the pure path: the Applier then copies file by file, as it always did.
copy_files = None if _compiled is None else _compiled.copy_files


def slow_ns() -> int:
    return int(scan.SLOW_STAT_S * 1e9)


def compiled_list_pair(src_fd: int, dst_fd: int, owner: bool | None,
                       most: int | None = None) -> scan.Listed | tuple[list[bytes], list[bytes]]:
    """scan.list_pair by the compiled core; a folder on a slow store (its first lstat calls
    say so) is listed again by the pure code, whose threads wait on the store together."""
    listed = _compiled.list_pair(src_fd, dst_fd, owner, -1 if most is None else most, slow_ns())
    return scan.list_pair(src_fd, dst_fd, owner, most) if listed is None else listed


def compiled_stat_pair(src_fd: int, dst_fd: int, src_names: list[bytes], dst_names: list[bytes],
                       owner: bool | None) -> scan.Listed:
    """scan.stat_pair by the compiled core; a slow store's names by the pure code."""
    listed = _compiled.stat_pair(src_fd, dst_fd, src_names, dst_names, owner, slow_ns())
    return scan.stat_pair(src_fd, dst_fd, src_names, dst_names, owner) if listed is None else listed


# A folder pair's listing (plan/march.py reads local trees through these)
list_pair = scan.list_pair if _compiled is None else compiled_list_pair
stat_pair = scan.stat_pair if _compiled is None else compiled_stat_pair


def describe() -> str:
    """What `mirror --version` says of the core: 'C (mirror._core)' or 'Python (why)'."""
    return f"{ACTIVE.value} ({WHY})"
