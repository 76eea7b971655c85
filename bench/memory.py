"""Peak memory of a process tree: the sum of PSS (/proc/PID/smaps_rollup) sampled every ~50 ms."""
from __future__ import annotations

import glob
import os
import resource
import threading
import time
from pathlib import Path

from .runner import Measurement, finish, start
from .tools import Tool


def children(pid: int) -> list[int]:
    """Direct children of pid, via /proc/PID/task/*/children or, without it, a /proc scan."""
    found: list[int] = []
    paths = glob.glob(f"/proc/{pid}/task/*/children")
    if paths:
        for path in paths:
            try:
                found.extend(int(word) for word in Path(path).read_text().split())
            except OSError:
                pass
        return found
    for stat in glob.glob("/proc/[0-9]*/stat"):
        try:
            text = Path(stat).read_text()
        except OSError:
            continue
        fields = text.rsplit(")", 1)[1].split()       # the name may hold spaces and ')'
        if int(fields[1]) == pid:
            found.append(int(stat.split("/")[2]))
    return found


def process_tree(root: int) -> list[int]:
    tree, stack = [], [root]
    while stack:
        pid = stack.pop()
        tree.append(pid)
        stack.extend(children(pid))
    return tree


def pss_kib(pid: int) -> int:
    """PSS of one process in KiB; 0 when it is gone (or a zombie)."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as handle:
            for line in handle:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


class Sampler(threading.Thread):
    """Samples the summed PSS of root's process tree until stopped; keeps the peak."""

    def __init__(self, root: int, interval: float = 0.05) -> None:
        super().__init__(daemon=True)
        self.root, self.interval = root, interval
        self.peak_kib = 0
        self.peak_processes = 0
        self.samples = 0
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            pids = process_tree(self.root)
            total = sum(pss_kib(pid) for pid in pids)
            self.samples += 1
            if total > self.peak_kib:
                self.peak_kib, self.peak_processes = total, len(pids)
            self._stop_event.wait(self.interval)

    def stop(self) -> None:
        self._stop_event.set()
        self.join()


def sampled_run(tool: Tool, src: Path, dst: Path, rnd: int) -> Measurement:
    """Run tool once while sampling its tree's PSS; extra holds peak_pss_mb and the counts."""
    os.sync()
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    process = start(tool, src, dst)
    sampler = Sampler(process.pid)
    sampler.start()
    code, error = finish(process)
    seconds = time.perf_counter() - started
    sampler.stop()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    extra = {"peak_pss_mb": sampler.peak_kib / 1024, "processes_at_peak": sampler.peak_processes,
             "samples": sampler.samples}
    return Measurement(tool.label, rnd, seconds, cpu, code == 0, error, extra)
