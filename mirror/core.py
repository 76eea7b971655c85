"""Which core runs the per-folder loops: the compiled mirror._core, or the pure-Python code."""
from __future__ import annotations

import enum
import os

from .model import Action, Entry, Symbol

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
    """The positions of the fields the compiled core reads of the records it is given."""
    entry = ("mode", "size", "mtime_ns", "uid", "gid", "ctime_ns", "atime_ns")
    return {"Entry": {name: Entry._fields.index(name) for name in entry},
            "Action": {name: Action._fields.index(name) for name in ("path", "src", "dst")},
            "Ladder": {step.name: step.value for step in Ladder}}


def choose():
    """(the compiled module or None, why): decided once, when mirror first needs it."""
    forced = os.environ.get(FORCE_PURE, "")
    if forced not in ("", "0"):
        return None, f"{FORCE_PURE}={forced}"
    try:
        from . import _core
    except ImportError as error:
        return None, f"no compiled core: {error}"
    if _core.LAYOUT != layout():  # a stale build beside newer Python code
        return None, "no compiled core: mirror._core was built for other records; reinstall mirror"
    return _core, "mirror._core"


_compiled, WHY = choose()
ACTIVE = Core.PYTHON if _compiled is None else Core.C
# None on the pure path: the Applier then copies file by file, as it always did.
copy_files = None if _compiled is None else _compiled.copy_files


def describe() -> str:
    """What `mirror --version` says of the core: 'C (mirror._core)' or 'Python (why)'."""
    return f"{ACTIVE.value} ({WHY})"
