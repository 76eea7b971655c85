"""Progress sinks: a tqdm bar on a terminal, plain timestamped lines elsewhere; one text for both."""
from __future__ import annotations

import sys
import time

from ..events import Discovered, Event, Finished, Progress, ScanDone, Walked
from ..model import Op, Status
from .summary import size

LINE_EVERY_S = 5.0
DRAW_EVERY_S = 0.25
COPY, DONE = Op.COPY, Status.DONE


class Counts:
    """What the events tell: files checked and copied, bytes, and the totals, which are
    estimated while the walk runs: the folders still to list are taken to hold as much as
    those listed so far (marked ~ until the walk ends)."""

    def __init__(self, checking: bool = False) -> None:
        self.checking = checking  # check: what finishes is a difference, nothing is copied
        self.started = time.monotonic()
        self.checked = self.copied = self.bytes_done = 0
        self.files_planned = self.bytes_planned = 0
        self.walking = True
        self.folders_done, self.folders_found = 0, 1

    def take(self, event: Event) -> None:
        if type(event) is Finished:
            if self.checking or (event.op is COPY and event.status is DONE):
                self.copied += 1
        elif type(event) is Progress:
            self.bytes_done += event.nbytes
        elif type(event) is Walked:
            self.checked += event.checked
            self.folders_done, self.folders_found = event.folders_done, event.folders_found
        elif type(event) is Discovered:
            self.files_planned += event.files
            self.bytes_planned += event.nbytes
        elif type(event) is ScanDone:
            self.walking = False
            self.files_planned, self.bytes_planned = event.files, event.nbytes

    def totals(self) -> tuple[float, float] | None:
        """(files, bytes) to copy: final once the walk is over, else estimated (None: too early)."""
        if not self.walking:
            return self.files_planned, self.bytes_planned
        if not self.folders_done:
            return None
        scale = self.folders_found / self.folders_done
        return self.files_planned * scale, self.bytes_planned * scale

    def fraction(self) -> float | None:
        totals = self.totals()
        if totals is None:
            return None
        files, nbytes = totals
        if nbytes >= 1 and self.bytes_planned:
            return min(1.0, self.bytes_done / max(nbytes, self.bytes_done))
        if files >= 1 and self.files_planned:
            return min(1.0, self.copied / max(files, self.copied))
        return None if self.walking else 1.0

    def counts(self) -> str:
        """The part that stays on the narrowest terminal: never more done than the total shown."""
        if self.checking:
            return f"checked {self.checked:,}, {self.copied:,} differ"
        total = max(self.files_planned, self.copied)
        of = f"≥{total:,}" if self.walking else f"{total:,}"
        # a folder's files are copied before its task reports them checked: never fewer
        return f"copied {self.copied:,} of {of} files, checked {max(self.checked, self.copied):,}"

    def estimate(self, now: float) -> str:
        """Percentage, bytes, rate and time left; ~ marks estimates made while the walk runs."""
        elapsed = now - self.started
        rate = self.bytes_done / elapsed if elapsed > 0 else 0.0
        parts = [f"{size(self.bytes_done)} at {size(rate)}/s"]
        fraction = self.fraction()
        if fraction is not None:
            mark = "~" if self.walking else ""
            parts.insert(0, f"{mark}{fraction * 100:.0f}%")
            if 0 < fraction < 1 and elapsed > 1:
                parts.append(f"{mark}{clock(elapsed * (1 - fraction) / fraction)} left")
        return ", ".join(parts)


def clock(seconds: float) -> str:
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


class BarSink:
    """A tqdm bar whose text is ours: the counts first, so that on a narrow terminal the bar
    shrinks and the estimates are cut before them; redrawn at most 4 times a second, and on
    every heartbeat, so the clock always runs; follows the terminal's width as it changes."""

    def __init__(self, checking: bool = False) -> None:
        from tqdm import tqdm  # imported only when a bar is shown: it costs start-up time

        class Bar(tqdm):
            tail = ""

            @property
            def format_dict(self):  # {tail}: our text after the bar, without tqdm's ", "
                return {**super().format_dict, "tail": self.tail}

        tqdm.monitor_interval = 0  # no monitor thread: the workers are forked after the bar starts
        self.counts = Counts(checking)
        self.bar = Bar(total=1, file=sys.stderr, dynamic_ncols=True, leave=True,
                       desc=self.label(), bar_format="{desc} {elapsed} |{bar}| {tail}")
        self.drawn = 0.0

    def __call__(self, event: Event) -> None:
        self.counts.take(event)
        now = time.monotonic()
        if now - self.drawn >= DRAW_EVERY_S or type(event) is ScanDone:
            self.draw(now)

    def draw(self, now: float) -> None:
        self.drawn = now
        self.bar.n = self.counts.fraction() or 0.0
        self.bar.set_description_str(self.label(), refresh=False)
        self.bar.tail = self.counts.estimate(now)
        self.bar.refresh()

    def label(self) -> str:
        doing = "comparing" if self.counts.checking else "copying"
        return f"{'scanning' if self.counts.walking else doing}: {self.counts.counts()}"

    def close(self) -> None:
        self.draw(time.monotonic())
        self.bar.close()


class LineSink:
    """For a log or a pipe: one timestamped line every 5 s, never a redrawn one."""

    def __init__(self, stream=None, checking: bool = False) -> None:
        self.counts = Counts(checking)
        self.stream = stream or sys.stderr
        self.last = self.counts.started

    def __call__(self, event: Event) -> None:
        self.counts.take(event)
        now = time.monotonic()
        if now - self.last >= LINE_EVERY_S:
            self.last = now
            self.write(now)

    def write(self, now: float) -> None:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S")
        print(f"{stamp} progress: {self.counts.counts()}, {self.counts.estimate(now)}",
              file=self.stream, flush=True)

    def close(self) -> None:
        self.write(time.monotonic())
