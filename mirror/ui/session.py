"""One command's presentation: sinks for progress, -v and the log; the summary, errors and JSON."""
from __future__ import annotations

import json
import os
import sys

from ..errors import Interrupted, MirrorError
from ..model import Mode, display
from ..options import Options
from ..report import Report
from ..events import Event, Finished
from .logs import LogFile
from .progress import BarSink, LineSink
from .summary import describe_outcome, summarize


class Session:
    def __init__(self, view) -> None:
        self.view = view
        self.log: LogFile | None = None
        self.progress: BarSink | LineSink | None = None
        self.sinks: list = []

    def __enter__(self) -> "Session":
        if self.view.log_file:
            self.log = LogFile(self.view.log_file)
            self.sinks.append(self.log)
        return self

    def __exit__(self, kind, error, trace) -> None:
        if self.progress is not None:
            self.progress.close()
        if self.log is not None:
            if isinstance(error, MirrorError):
                self.log.write(f"error: {error}")
            self.log.close()

    def run(self, mode: Mode, src: str, dst: str, options: Options) -> Report:
        from ..api import check_tree, copy_tree, sync_tree
        if self.log:
            roots = f"{display(os.fsencode(src))} {display(os.fsencode(dst))}"
            self.log.write(f"start: {mode.value} {roots}" + (" (dry run)" if options.dry_run else ""))
        self.start_progress()
        if self.view.verbose and not self.view.quiet and mode is not Mode.CHECK:
            self.sinks.append(self.print_action)
        if mode is Mode.CHECK and self.log is not None:
            self.sinks.remove(self.log)  # check lists its differences at the end, not actions
        run = {Mode.COPY: copy_tree, Mode.SYNC: sync_tree, Mode.CHECK: check_tree}[mode]
        try:
            report = run(src, dst, options, on_event=self.on_event)
        except Interrupted as stop:
            self.finish(stop.report)
            raise
        self.finish(report)
        return report

    def start_progress(self) -> None:
        wanted = self.view.progress
        if wanted is None:
            wanted = sys.stderr.isatty() and not self.view.quiet
        if wanted:
            self.progress = BarSink() if sys.stderr.isatty() else LineSink()
            self.sinks.append(self.progress)

    def on_event(self, event: Event) -> None:
        for sink in self.sinks:
            sink(event)

    def print_action(self, event: Event) -> None:
        if isinstance(event, Finished):
            line = describe_outcome(event.outcome)
            if line:
                self.say(line, sys.stdout)

    def say(self, text: str, stream) -> None:
        """Print a line without tearing the progress bar."""
        if isinstance(self.progress, BarSink):
            self.progress.bar.write(text, file=stream)
        else:
            print(text, file=stream)

    def finish(self, report: Report) -> None:
        if self.progress is not None:
            self.progress.close()
            self.progress = None
        quiet = self.view.quiet
        if not quiet:
            if self.view.print0:
                self.print0(report)
            else:
                for difference in report.differences:
                    print(difference)
            for warning in report.warnings:
                print(f"mirror: warning: {warning}", file=sys.stderr)
        for failure in report.errors:
            print(f"mirror: error: {failure}", file=sys.stderr)
        summary = summarize(report)
        if not quiet or report.exit_code or report.interrupted:
            print(summary, file=sys.stderr)
        if self.log:  # what stderr says, in the same words: LogFile leaves failures to this
            for warning in report.warnings:
                self.log.write(f"warning: {warning}")
            for failure in report.errors:
                self.log.write(f"error: {failure}")
            self.log.write(f"summary: {summary}")
        if self.view.json:
            print(json.dumps(report.to_dict()), flush=True)

    @staticmethod
    def print0(report: Report) -> None:
        """check -0: "MARKER PATH" NUL-terminated, the path's own bytes (a name has no NUL), for xargs -0."""
        sys.stdout.flush()
        out = sys.stdout.buffer
        for difference in report.differences:
            out.write(difference.marker.encode() + b" " + (difference.path or b".") + b"\0")
        out.flush()
