"""mirror: copy, sync and check directory trees in parallel."""
from .api import check_tree, copy_tree, sync_tree
from .errors import LockHeld, MirrorError
from .options import Options
from .report import Difference, Failure, Report

__all__ = ["copy_tree", "sync_tree", "check_tree", "Options", "Report", "Failure", "Difference",
           "MirrorError", "LockHeld"]
__version__ = "0.1.0"
