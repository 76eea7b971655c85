"""Progress sinks: a tqdm bar on a terminal, plain periodic lines elsewhere."""
from __future__ import annotations

import sys
import time

from ..model import Op
from ..events import Discovered, Event, Finished, Progress, ScanDone
from .summary import size

LINE_EVERY_S = 5.0


class Counts:
    """Files and bytes planned and done, as the events tell them."""

    def __init__(self) -> None:
        self.files_total: int | None = None   # None while the walk runs
        self.files_planned = self.files_done = 0
        self.bytes_done = 0

    def take(self, event: Event) -> None:
        if isinstance(event, Discovered):
            self.files_planned += event.files
        elif isinstance(event, Finished) and event.op is Op.COPY:
            self.files_done += 1
        elif isinstance(event, Progress):
            self.bytes_done += event.nbytes
        elif isinstance(event, ScanDone):
            self.files_total = event.files

    def files(self) -> str:
        if self.files_total is None:
            return f"{self.files_done:,}/{self.files_planned:,}+ files (scanning)"
        return f"{self.files_done:,}/{self.files_total:,} files"


class BarSink:
    """A tqdm bar over bytes; while the walk runs the total is unknown and it says so."""

    def __init__(self) -> None:
        from tqdm import tqdm  # imported only when a bar is shown: it costs start-up time

        tqdm.monitor_interval = 0  # no monitor thread: the workers are forked after the bar starts

        self.counts = Counts()
        self.bar = tqdm(total=None, unit="B", unit_scale=True, unit_divisor=1000,
                        desc="scanning", file=sys.stderr, dynamic_ncols=True, leave=True)

    def __call__(self, event: Event) -> None:
        self.counts.take(event)
        # The file counts are written into the bar only when it may be redrawn (update, the
        # end of the walk, close), not at every finished file: formatting them costs time.
        if isinstance(event, Progress):
            self.bar.set_postfix_str(self.counts.files(), refresh=False)
            self.bar.update(event.nbytes)
        elif isinstance(event, ScanDone):
            self.bar.total = max(event.nbytes, self.bar.n)
            self.bar.set_description("copying", refresh=False)
            self.bar.set_postfix_str(self.counts.files(), refresh=False)

    def close(self) -> None:
        self.bar.set_postfix_str(self.counts.files(), refresh=False)
        self.bar.close()


class LineSink:
    """For a log or a pipe: one plain line every few seconds, never a redrawn one."""

    def __init__(self, stream=None) -> None:
        self.counts = Counts()
        self.stream = stream or sys.stderr
        self.started = self.last = time.monotonic()

    def __call__(self, event: Event) -> None:
        self.counts.take(event)
        now = time.monotonic()
        if now - self.last >= LINE_EVERY_S:
            self.last = now
            self.write(now)

    def write(self, now: float) -> None:
        rate = self.counts.bytes_done / max(now - self.started, 1e-9)
        print(f"progress: {size(self.counts.bytes_done)}, {self.counts.files()}, {size(rate)}/s",
              file=self.stream, flush=True)

    def close(self) -> None:
        self.write(time.monotonic())
