"""One command's presentation: sinks for progress, -v and the log; the summary, errors and JSON."""
from __future__ import annotations

import errno
import json
import os
import signal
import sys
from types import SimpleNamespace

from ..errors import Interrupted, MirrorError, Terminated, describe, drop_stop_signals, signal_number
from ..model import Mode, display
from ..options import Options
from ..report import Report
from ..events import Event, Finished, Retrying
from .logs import LogFile
from .progress import BarSink, LineSink
from .summary import describe_finished, describe_options, held_back, summarize


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
            for stream in outputs():
                stream.on_lost = self.output_lost
                if stream.lost:
                    self.output_lost(stream)
        return self

    def __exit__(self, kind, error, trace) -> None:
        if self.progress is not None:
            self.progress.close()
        if self.log is not None:
            if isinstance(error, MirrorError):
                self.log.write(f"error: {error}")
                self.log.write(f"end: exit {error.exit_code}: nothing done")
            for stream in outputs():
                stream.on_lost = None
            self.log.close()

    def output_lost(self, stream: Output) -> None:
        self.log.write(f"{stream.name} {stream.lost}: output stopped")

    def run(self, mode: Mode, src: str, dst: str, options: Options, engine) -> Report:
        try:
            report = self.work(mode, src, dst, options, engine)
        except Interrupted as stop:
            self.finish(stop.report, stop.signum)
            raise
        except (KeyboardInterrupt, Terminated) as stop:  # before the run could take it (check: any time)
            report = Report(mode, options.jobs, options.dry_run)
            report.interrupted = True
            self.finish(report, signal_number(stop))
            raise Interrupted(signal_number(stop), report) from None
        self.finish(report)
        return report

    def work(self, mode: Mode, src: str, dst: str, options: Options, engine) -> Report:
        from .. import check_tree, copy_tree, sync_tree
        if self.log:
            shown = src.path if hasattr(src, "path") else os.fsencode(src)  # a remote tree: its URL
            roots = f"{display(shown)} {display(os.fsencode(dst))}"
            self.log.write(f"start: {mode.value} {roots} ({describe_options(options)})")
        self.start_progress(mode is Mode.CHECK)
        if self.view.verbose and not self.view.quiet and mode is not Mode.CHECK:
            self.sinks.append(self.print_action)
        if mode is Mode.CHECK and self.log is not None:
            self.sinks.remove(self.log)  # check lists its differences at the end, not actions
        run = {Mode.COPY: copy_tree, Mode.SYNC: sync_tree, Mode.CHECK: check_tree}[mode]
        return run(src, dst, options, on_event=self.on_event, engine=engine)

    def start_progress(self, checking: bool) -> None:
        wanted = self.view.progress
        if wanted is None:
            wanted = sys.stderr.isatty() and not self.view.quiet
        if wanted:
            self.progress = BarSink(checking) if sys.stderr.isatty() else LineSink(checking=checking)
            self.sinks.append(self.progress)

    def on_event(self, event: Event) -> None:
        for sink in self.sinks:
            sink(event)

    def print_action(self, event: Event) -> None:
        if isinstance(event, Finished):
            line = describe_finished(event)
            if line:
                self.say(line, sys.stdout)
        elif isinstance(event, Retrying):  # why it is tried again (--retries)
            self.say(f"{'retry':<8} {display(event.path)}: {describe(event.error)}", sys.stdout)

    def say(self, text: str, stream) -> None:
        """Print a line without tearing the progress bar."""
        if isinstance(self.progress, BarSink):
            self.progress.bar.write(text, file=stream)
        else:
            print(text, file=stream)

    def finish(self, report: Report, signum: int | None = None) -> None:
        drop_stop_signals()  # the work is over: a stop now would only cut this short
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
            if self.view.verbose:
                for line in held_back(report):
                    print(f"mirror: {line}", file=sys.stderr)
        for failure in report.errors:
            print(f"mirror: error: {failure}", file=sys.stderr)
        summary = summarize(report)
        if not quiet or report.exit_code or report.interrupted:
            print(summary, file=sys.stderr)
        if self.log:  # what stderr says, in the same words: LogFile leaves failures to this
            if signum is not None:
                self.log.write(f"interrupted by {signal.Signals(signum).name}")
            for warning in report.warnings:
                self.log.write(f"warning: {warning}")
            for line in held_back(report):
                self.log.write(line)
            for failure in report.errors:
                self.log.write(f"error: {failure}")
            # the last line of every run, interrupted too: what a script or an operator greps
            code = report.exit_code if signum is None else 128 + signum
            self.log.write(f"end: exit {code}: {summary}")
        if self.view.json:
            summary = report.to_dict()
            if signum is not None:
                summary["exit_code"] = 128 + signum  # what the process exits with
            print(json.dumps(summary))
        sys.stdout.flush()  # now, while the log is open to say so if stdout is gone

    @staticmethod
    def print0(report: Report) -> None:
        """check -0: "MARKER PATH" NUL-terminated, the path's own bytes (a name has no NUL), for xargs -0."""
        sys.stdout.flush()
        out = sys.stdout.buffer
        for difference in report.differences:
            out.write(difference.marker.encode() + b" " + (difference.path or b".") + b"\0")
        out.flush()


def stopped_early(stop: BaseException, mode: Mode | None = None, view=None) -> int:
    """A stop before a session could take it (while the command was imported or its arguments
    read): the summary of an interrupted run that did nothing, and the JSON line if --json was
    given. Returns the exit code."""
    if view is None:
        mode, view = read_view(sys.argv[1:])
    guard_output()
    report = Report(mode or Mode.COPY, Options().jobs, False)
    report.interrupted = True
    try:
        with Session(SimpleNamespace(**vars(view))) as session:  # the log too: its last line says so
            session.finish(report, signal_number(stop))
    except MirrorError:  # the log cannot be opened: stderr has said it all
        pass
    return 128 + signal_number(stop)


def read_view(args: list[str]) -> tuple[Mode, SimpleNamespace]:
    """Enough of the arguments, read without typer, to summarize a run stopped before typer did."""
    args = args[:args.index("--")] if "--" in args else args
    mode = next((Mode(arg) for arg in args if arg in ("copy", "sync", "check")), Mode.COPY)
    log_file = next((value for flag, value in zip(args, args[1:]) if flag == "--log-file"), None)
    log_file = next((arg.split("=", 1)[1] for arg in args if arg.startswith("--log-file=")), log_file)
    return mode, SimpleNamespace(quiet="-q" in args or "--quiet" in args, verbose=False,
                                 progress=False, json="--json" in args, log_file=log_file, print0=False)


class Output:
    """sys.stdout or sys.stderr of the command line: the first write that fails (a closed pipe
    or descriptor, a full disk, a terminal hung up) ends the output to that stream, never the
    work; the run's exit code stays the one its work says."""

    def __init__(self, stream, name: str, fd: int) -> None:
        self.name, self.fd, self.pid = name, fd, os.getpid()
        self.lost: str | None = None if stream is not None else "closed"
        self.stream = stream if stream is not None else open(os.devnull, "w")
        self.on_lost = None

    def write(self, text: str) -> int:
        if self.lost is None:
            self.guard(self.stream.write, text)
        return len(text)

    def flush(self) -> None:
        if self.lost is None:
            self.guard(self.stream.flush)

    def isatty(self) -> bool:
        return self.lost is None and self.stream.isatty()

    def fileno(self) -> int:
        return self.fd

    @property
    def buffer(self) -> RawOutput:
        return RawOutput(self)

    def __getattr__(self, name: str):
        return getattr(self.stream, name)

    def guard(self, write, *args) -> None:
        try:
            write(*args)
        except (OSError, ValueError) as error:  # ValueError: the stream object was closed
            closed = not isinstance(error, OSError) or error.errno in (errno.EPIPE, errno.EBADF)
            self.lost = "closed" if closed else f"failed ({describe(error)})"
            # What the stream still buffers is flushed again at exit: into /dev/null, not into
            # an "Exception ignored ... BrokenPipeError" on stderr.
            null = os.open(os.devnull, os.O_WRONLY)
            os.dup2(null, self.fd)
            os.close(null)
            if self.on_lost is not None and os.getpid() == self.pid:  # not in a forked worker
                self.on_lost(self)


class RawOutput:
    """An Output's bytes (check --print0), under the same guard."""

    def __init__(self, text: Output) -> None:
        self.text = text

    def write(self, data: bytes) -> None:
        if self.text.lost is None:
            self.text.guard(self.text.stream.buffer.write, data)

    def flush(self) -> None:
        if self.text.lost is None:
            self.text.guard(self.text.stream.buffer.flush)


def guard_output() -> None:
    """For the command line: sys.stdout and sys.stderr become Outputs, and descriptors 0-2 stay
    taken (a closed one by /dev/null), so that no file the run opens gets one of them."""
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            null = os.open(os.devnull, os.O_RDWR)
            if null != fd:
                os.dup2(null, fd)
                os.close(null)
    for name, fd in (("stdout", 1), ("stderr", 2)):
        if not isinstance(getattr(sys, name), Output):
            setattr(sys, name, Output(getattr(sys, name), name, fd))


def outputs() -> list[Output]:
    return [stream for stream in (sys.stdout, sys.stderr) if isinstance(stream, Output)]
