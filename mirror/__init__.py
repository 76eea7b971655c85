"""mirror: copy, sync and check directory trees in parallel."""
from __future__ import annotations

from importlib import import_module

TYPE_CHECKING = False  # typing costs 10 ms of start-up
if TYPE_CHECKING:
    from .api import check_tree, copy_tree, engine_for, sync_tree
    from .errors import LockHeld, MirrorError
    from .model import EngineChoice
    from .options import Options
    from .plan.tree import LocalTree, SourceTree
    from .report import Difference, Failure, Report
    from .run.engine import Engine, InlineEngine
    from .run.mpi import MPIEngine
    from .run.pool import PoolEngine

# The public API: these names, and the modules mirror.events (what on_event receives),
# mirror.model (entries, kinds, ops, reasons), mirror.options, mirror.report and mirror.errors.
__all__ = ["copy_tree", "sync_tree", "check_tree", "Options", "Report", "Failure", "Difference",
           "MirrorError", "LockHeld", "SourceTree", "LocalTree", "Engine", "PoolEngine", "InlineEngine",
           "MPIEngine", "EngineChoice", "engine_for"]
__version__ = "0.1.0"

# Loaded when first used, not here: the command line must set its signal handlers before
# multiprocessing and the rest are imported, and this file runs before any of its code.
_HOMES = {"copy_tree": "api", "sync_tree": "api", "check_tree": "api", "Options": "options",
          "Report": "report", "Failure": "report", "Difference": "report",
          "MirrorError": "errors", "LockHeld": "errors", "SourceTree": "plan.tree",
          "LocalTree": "plan.tree", "Engine": "run.engine", "InlineEngine": "run.engine",
          "PoolEngine": "run.pool", "MPIEngine": "run.mpi", "EngineChoice": "model",
          "engine_for": "api"}


def __getattr__(name: str) -> object:
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(f".{_HOMES[name]}", __name__), name)
    globals()[name] = value
    return value
