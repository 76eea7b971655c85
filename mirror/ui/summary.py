"""The closing paragraph of a run, and the line-per-action text of -v and the log."""
from __future__ import annotations

from ..events import Finished
from ..model import Mode, Op, Reason, Status, display
from ..report import Report

DIR_META_SHOWN = (Reason.PERMS, Reason.OWNER)


def size(nbytes: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if nbytes < 1000 or unit == "TB":
            return f"{nbytes:.0f} {unit}" if unit == "B" else f"{nbytes:.1f} {unit}"
        nbytes /= 1000
    return ""


def plural(count: int, noun: str, nouns: str = "") -> str:
    return f"{count:,} {noun if count == 1 else nouns or noun + 's'}"


def describe_finished(finished: Finished) -> str | None:
    """One line for -v and the log, or None for bookkeeping nobody asked to see."""
    if finished.op is Op.DIR_META and finished.reason not in DIR_META_SHOWN:
        return None
    path = display(finished.path) + ("/" if finished.op in (Op.MKDIR, Op.DIR_META) else "")
    if finished.status is Status.DONE:
        return f"{finished.op.value:<8} {path}  ({finished.reason.value})"
    return f"{finished.status.value:<8} {path}: {finished.error.strerror if finished.error else ''}"


def summarize(report: Report) -> str:
    """A paragraph: what was copied, skipped, failed and deleted, how much, how fast."""
    if report.mode is Mode.CHECK:
        verdict = "identical" if not report.differing else plural(report.differing, "difference")
        same = plural(report.files_skipped, "file") + " equal"
        if report.uncopiable and not report.strict:
            same += f"; {plural(report.uncopiable, 'entry', 'entries')} of SRC cannot be copied, not counted"
        return _tail(report, f"Compared SRC and DST: {verdict} ({same}) in {report.elapsed_s:.2f} s")
    rate = report.bytes_copied / report.elapsed_s if report.elapsed_s > 0 else 0
    verb = "Would copy" if report.dry_run else "Copied"
    parts = [f"{verb} {plural(report.files_copied, 'file')} ({size(report.bytes_copied)})",
             f"skipped {report.files_skipped:,} unchanged"]
    if report.files_failed:
        parts.append(f"{report.files_failed:,} failed")
    made = [plural(count, noun) for count, noun in (
        (report.dirs_created, "folder"), (report.links_created, "link"),
        (report.specials_created, "special file")) if count]
    if made:
        parts.append("created " + " and ".join(made))
    if report.metadata_updated:
        parts.append(f"updated metadata of {report.metadata_updated:,}")
    if report.mode is Mode.SYNC or report.deleted:
        parts.append(f"deleted {report.deleted:,}")
    text = "; ".join(parts) + f", in {report.elapsed_s:.2f} s ({size(rate)}/s) with {plural(report.jobs, 'job')}"
    if report.dry_run:
        text += "; dry run: nothing was changed"
    return _tail(report, text)


def describe_options(options) -> str:
    """The settings of a run that shape what it does, for the log's start line."""
    parts = [f"jobs {options.jobs}"]
    flags = [("dry run", options.dry_run), ("checksum", options.checksum), ("-H", options.hard_links),
             ("-X", options.xattrs), ("-A", options.acls), ("-x", options.one_file_system),
             ("no sparse", not options.sparse), ("delete excluded", options.delete_excluded),
             ("allow empty SRC", options.allow_empty_src), ("strict", options.strict),
             ("owners", options.owner)]
    parts += [name for name, on in flags if on]
    parts += [f"exclude {pattern}" for pattern in options.excludes]
    parts += [f"include {pattern}" for pattern in options.includes]
    if options.max_delete is not None:
        parts.append(f"max-delete {options.max_delete}")
    parts.append(f"retries {options.retries}")
    return ", ".join(parts)


HELD_BACK_SHOWN = 20


def held_back(report: Report) -> list[str]:
    """The deletions a run did not do (--max-delete, or errors), as lines, up to a limit."""
    paths, lines = report.held_back, []
    for path in paths[:HELD_BACK_SHOWN]:
        lines.append(f"held back: delete {display(path)}")
    if len(paths) > HELD_BACK_SHOWN:
        lines.append(f"held back: and {len(paths) - HELD_BACK_SHOWN:,} more deletions")
    return lines


def _tail(report: Report, text: str) -> str:
    if report.deletions_skipped:
        text += f". {report.deletions_skipped}"
    if report.errors:
        text += f". {plural(len(report.errors), 'error')}"
    if report.warnings:
        text += f". {plural(len(report.warnings), 'warning')}"
    if report.interrupted:
        text += ". Interrupted: the run is incomplete"
    return text + "."
