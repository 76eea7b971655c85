"""Report: what a run did, counted from its outcomes; the library's return value."""
from __future__ import annotations

import os
from dataclasses import dataclass, field

from .errors import describe
from .model import Action, Kind, Mode, Op, Outcome, Problem, Reason, Severity, Status, display


@dataclass(frozen=True, slots=True)
class Failure:
    """A failed entry: its relative path, a one-line message (without the path), and the
    OSError when there was one."""

    path: bytes
    message: str
    error: OSError | None = None

    def __str__(self) -> str:
        """The one form of an error, on stderr and in the log."""
        return f"{display(self.path)}: {self.message}"

    def to_dict(self) -> dict[str, str]:
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

    @property
    def exit_code(self) -> int:
        """0 when everything was done (check: the trees are identical), 1 when not."""
        return 1 if self.errors or self.differences or self.deletions_refused else 0

    def record(self, outcome: Outcome) -> None:
        action = outcome.action
        if action.op is COPY and outcome.status is DONE:  # most outcomes: checked first
            self.files_copied += 1
            self.bytes_copied += outcome.nbytes
            return
        if outcome.status is Status.VANISHED:
            self.warnings.append(f"{display(action.path)}: vanished before it was copied")
            return
        if outcome.status is Status.FAILED:
            self.errors.append(Failure(action.path, describe(outcome.error), outcome.error))
            if action.op is Op.COPY:
                self.files_failed += 1
            return
        if action.op is Op.COPY:
            self.files_copied += 1
            self.bytes_copied += outcome.nbytes
        else:
            counter = COUNTERS.get(action.op)
            if counter:
                setattr(self, counter, getattr(self, counter) + 1)

    def skip(self, action: Action) -> None:
        if action.src is not None and action.src.kind is Kind.FILE:
            self.files_skipped += 1

    def notice(self, problem: Problem) -> None:
        message = problem.message
        if problem.error is not None:
            message += f": {describe(problem.error)}"
        if problem.severity is Severity.WARNING:
            self.warnings.append(f"{display(problem.path)}: {message}")
        else:
            self.errors.append(Failure(problem.path, message, problem.error))

    def differ(self, item: Action | Problem) -> None:
        """check: record what sync would change, as a marked line."""
        if isinstance(item, Problem):
            if item.severity is Severity.WARNING:
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
            "elapsed_s": round(self.elapsed_s, 3),
            "jobs": self.jobs,
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
