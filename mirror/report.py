"""Report: what a run did, counted from its outcomes; the library's return value."""
from __future__ import annotations

import os
from dataclasses import dataclass, field

from .errors import describe
from .model import Action, Kind, Mode, Op, Problem, Reason, Severity, Status, display, fills_dst

TYPE_CHECKING = False
if TYPE_CHECKING:
    from .events import Finished


@dataclass(frozen=True, slots=True)
class Failure:
    """A failed entry: its relative path, a one-line message (without the path), and the
    OSError when there was one."""

    path: bytes | None   # None: a line that counts several entries
    message: str
    error: OSError | None = None

    def __str__(self) -> str:
        """The one form of an error, on stderr and in the log."""
        return self.message if self.path is None else f"{display(self.path)}: {self.message}"

    def to_dict(self) -> dict[str, str | None]:
        if self.path is None:  # a count of entries, not one entry
            return {"path": None, "display": None, "error": self.message}
        return {"path": os.fsdecode(self.path or b"."), "display": display(self.path),
                "error": self.message}


@dataclass(frozen=True, slots=True)
class Difference:
    """One line of `check`: + only in SRC, - only in DST, * differs, ! could not be read."""

    marker: str
    path: bytes
    reason: str

    def __str__(self) -> str:
        return f"{self.marker} {display(self.path)}" + (f"  ({self.reason})" if self.reason else "")

    def to_dict(self) -> dict[str, str]:
        """For --json: `path` gives the bytes back with os.fsencode, `display` is the line's form."""
        return {"path": os.fsdecode(self.path or b"."), "display": display(self.path),
                "marker": self.marker, "reason": self.reason}


@dataclass
class Report:
    mode: Mode
    jobs: int
    dry_run: bool
    files_copied: int = 0
    files_skipped: int = 0
    files_failed: int = 0
    bytes_copied: int = 0
    dirs_created: int = 0
    links_created: int = 0
    specials_created: int = 0
    metadata_updated: int = 0
    deleted: int = 0
    temp_files_removed: int = 0
    retried: int = 0                  # failed entries tried again (--retries)
    errors: list[Failure] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    differences: list[Difference] = field(default_factory=list)
    deletions_skipped: str | None = None
    elapsed_s: float = 0.0
    deletions_refused: bool = False   # --max-delete stopped them: the run is partial
    interrupted: bool = False
    dst_full: bool = False            # an ENOSPC, EDQUOT or EROFS was met in DST
    unwritten: int = 0                # entries failed after it: one line in errors says so
    unwritten_at: int = 0             # where
    held_back: list[bytes] = field(default_factory=list)  # deletions not done (--max-delete, errors)
    strict: bool = False              # check --strict: what cannot be copied counts as a difference
    uncopiable: int = 0               # check: differences that are entries no copy can have
    workers_used: int | None = None   # distinct workers that ran a task (None: not counted)

    @property
    def exit_code(self) -> int:
        """0 when everything was done (check: the trees are identical), 1 when not."""
        return 1 if self.errors or self.differing or self.deletions_refused else 0

    @property
    def differing(self) -> int:
        """check: the differences that count (what cannot be copied only with --strict)."""
        return len(self.differences) - (0 if self.strict else self.uncopiable)

    def record(self, finished: Finished) -> None:
        if finished.op is COPY and finished.status is DONE:  # most records: checked first
            self.files_copied += 1
            self.bytes_copied += finished.nbytes
            return
        if finished.status is Status.VANISHED:
            self.warnings.append(f"{display(finished.path)}: vanished before it was copied")
            return
        if finished.status is Status.FAILED:
            if finished.op is Op.COPY:
                self.files_failed += 1
            if fills_dst(finished.error):
                if self.dst_full:
                    self.count_unwritten(finished.error)
                    return
                self.dst_full = True
            self.errors.append(Failure(finished.path, describe(finished.error), finished.error))
            return
        if finished.op is Op.COPY:
            self.files_copied += 1
            self.bytes_copied += finished.nbytes
        else:
            counter = COUNTERS.get(finished.op)
            if counter:
                setattr(self, counter, getattr(self, counter) + 1)

    def count_unwritten(self, error: OSError) -> None:
        """After DST was found full, one counted line instead of one a entry."""
        if self.unwritten == 0:
            self.unwritten_at = len(self.errors)
            self.errors.append(Failure(None, ""))
        self.unwritten += 1
        self.errors[self.unwritten_at] = Failure(
            None, f"{self.unwritten:,} more {'entry' if self.unwritten == 1 else 'entries'} not "
            f"written: {describe(error)}", error)

    def skip(self, action: Action) -> None:
        if action.src is not None and action.src.kind is Kind.FILE:
            self.files_skipped += 1

    def notice(self, problem: Problem) -> None:
        message = problem.message
        if problem.error is not None:
            message += f": {describe(problem.error)}"
        if problem.severity is not Severity.ERROR:
            self.warnings.append(f"{display(problem.path)}: {message}")
        else:
            self.errors.append(Failure(problem.path, message, problem.error))

    def differ(self, item: Action | Finished | Problem) -> None:
        """check: record what sync would change, as a marked line."""
        if isinstance(item, Problem):
            if item.severity is Severity.UNCOPIABLE:
                self.differences.append(Difference("!", item.path, item.message))
                self.uncopiable += 1
            elif item.severity is Severity.WARNING:
                self.notice(item)
            else:
                self.differences.append(Difference("!", item.path, item.message))
                self.notice(item)
            return
        if item.op is Op.DELETE or item.op is Op.CLEANUP:
            self.differences.append(Difference("-", item.path, "" if item.op is Op.DELETE else item.reason.value))
        elif item.reason is Reason.MISSING:
            self.differences.append(Difference("+", item.path, ""))
        else:
            self.differences.append(Difference("*", item.path, item.reason.value))

    def to_dict(self) -> dict[str, object]:
        return {
            "mode": self.mode.value,
            "files_copied": self.files_copied,
            "files_skipped": self.files_skipped,
            "files_failed": self.files_failed,
            "bytes_copied": self.bytes_copied,
            "dirs_created": self.dirs_created,
            "links_created": self.links_created,
            "specials_created": self.specials_created,
            "metadata_updated": self.metadata_updated,
            "deleted": self.deleted,
            "temp_files_removed": self.temp_files_removed,
            "retried": self.retried,
            "differences": len(self.differences),
            "difference_list": [difference.to_dict() for difference in self.differences],
            "errors": [failure.to_dict() for failure in self.errors],
            "warnings": list(self.warnings),
            "deletions_skipped": self.deletions_skipped,
            "deletions_held_back": [os.fsdecode(path) for path in self.held_back],
            "elapsed_s": round(self.elapsed_s, 3),
            "jobs": self.jobs,
            "workers_used": self.workers_used,
            "dry_run": self.dry_run,
            "interrupted": self.interrupted,
            "exit_code": self.exit_code,
        }


COPY, DONE = Op.COPY, Status.DONE
COUNTERS = {
    Op.MKDIR: "dirs_created",
    Op.SYMLINK: "links_created",
    Op.HARDLINK: "links_created",
    Op.SPECIAL: "specials_created",
    Op.SET_META: "metadata_updated",
    Op.CLEANUP: "temp_files_removed",
    Op.DELETE: "deleted",
}
