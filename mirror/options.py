"""Options: every setting of a run in one frozen dataclass, validated once."""
from __future__ import annotations

import os
from dataclasses import dataclass

from .errors import MirrorError
from .model import display


def default_jobs() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


@dataclass(frozen=True, slots=True)
class Options:
    jobs: int = 0                       # 0: one per CPU
    dry_run: bool = False
    checksum: bool = False              # compare content (xxh3-128) instead of size + mtime
    excludes: tuple[str, ...] = ()      # gitignore patterns, relative to SRC
    includes: tuple[str, ...] = ()      # re-include what an exclude matched
    hard_links: bool = False
    max_delete: int | None = None       # sync: delete nothing when the plan deletes more
    retries: int = 2                    # more tries for entries that failed, after a pause
    owner: bool | None = None           # keep owner and group; None: when running as root
    allow_empty_src: bool = False       # sync: an empty SRC may empty a non-empty DST
    delete_excluded: bool = False       # sync: excluded entries in DST are deleted too
    sparse: bool = True                 # holes in SRC's files stay holes in DST
    xattrs: bool = False                # keep extended attributes (-X)
    acls: bool = False                  # keep POSIX ACLs (-A)
    one_file_system: bool = False       # do not cross mount points inside SRC (-x)
    strict: bool = False                # check: what cannot be copied (sockets) is a difference

    def __post_init__(self) -> None:
        if self.jobs == 0:
            object.__setattr__(self, "jobs", default_jobs())
        if self.jobs < 1:
            raise MirrorError(f"--jobs must be at least 1, not {self.jobs}")
        if self.max_delete is not None and self.max_delete < 0:
            raise MirrorError(f"--max-delete must be 0 or more, not {self.max_delete}")
        if self.retries < 0:
            raise MirrorError(f"--retries must be 0 or more, not {self.retries}")
        if self.owner is None:
            object.__setattr__(self, "owner", os.geteuid() == 0)
        object.__setattr__(self, "excludes", tuple(self.excludes))
        object.__setattr__(self, "includes", tuple(self.includes))


def read_patterns(path: str) -> list[str]:
    """The patterns of an --exclude-from file: one a line, blank lines and # comments skipped."""
    try:
        with open(path, encoding="utf-8", errors="surrogateescape") as lines:
            return [line.rstrip("\n") for line in lines if line.strip() and not line.startswith("#")]
    except OSError as error:
        shown = display(os.fsencode(path))
        raise MirrorError(f"cannot read --exclude-from file {shown}: {error.strerror}") from None
