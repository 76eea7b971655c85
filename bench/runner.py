"""Timing: interleaved rounds, the trash (rename aside, never rm between rounds), stats, checks."""
from __future__ import annotations

import os
import re
import resource
import shutil
import statistics
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from .tools import REPO_ROOT, Tool, tool_env

GIB = 1024 ** 3


@dataclass
class Measurement:
    """One timed run of one tool."""

    label: str
    round: int
    seconds: float
    cpu_seconds: float = 0.0
    ok: bool = True
    error: str = ""
    extra: dict[str, float] = field(default_factory=dict)


@dataclass
class Check:
    """One target: `value` (a ratio or MB) against `limit`, lower is better."""

    text: str
    value: float | None
    limit: float
    passed: bool | None


@dataclass(frozen=True)
class Target:
    """Passes when median(num/den per round) <= limit; without den, when median(num) <= limit."""

    num: str
    den: str | None
    limit: float
    text: str


@dataclass
class CaseResult:
    name: str
    description: str
    metric: str                                   # "seconds" or "peak_pss_mb"
    rounds: int
    labels: list[str] = field(default_factory=list)
    measurements: list[Measurement] = field(default_factory=list)
    ratios: dict[str, dict[str, float | list[float] | None]] = field(default_factory=dict)
    checks: list[Check] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)     # label -> reason
    notes: list[str] = field(default_factory=list)

    def value(self, m: Measurement) -> float:
        return m.seconds if self.metric == "seconds" else m.extra[self.metric]

    def values(self, label: str) -> list[float]:
        return [self.value(m) for m in self.measurements if m.label == label and m.ok]

    def by_round(self, label: str) -> dict[int, float]:
        return {m.round: self.value(m) for m in self.measurements if m.label == label and m.ok}

    def stats(self, label: str) -> dict[str, float] | None:
        values = self.values(label)
        if not values:
            return None
        cpu = [m.cpu_seconds for m in self.measurements if m.label == label and m.ok]
        return {"median": statistics.median(values), "min": min(values), "max": max(values),
                "cpu_median": statistics.median(cpu), "n": len(values)}


def slug(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", label).strip("-").lower()


class Trash:
    """Moves trees aside with a rename (same filesystem) and deletes them only when told.

    On ext4 without a journal, creating files is several times slower for minutes after a
    mass delete, so nothing is deleted between rounds; when space runs short, the entries
    with the fewest files go first (deleting a few big files frees no inodes worth noting).
    """

    def __init__(self, root: Path, margin: int = 16 * GIB) -> None:
        self.root, self.margin = root, margin        # margin: free bytes ensure_free keeps
        self.root.mkdir(parents=True, exist_ok=True)
        self.entries: list[tuple[Path, int]] = []
        self._counter = 0

    def move(self, path: Path, files: int = 10**9) -> None:
        if not os.path.lexists(path):
            return
        self._counter += 1
        target = self.root / f"{os.getpid()}-{self._counter:05d}-{path.name}"
        os.rename(path, target)
        self.entries.append((target, files))

    def ensure_free(self, needed: int, margin: int | None = None) -> None:
        """Delete trash (fewest files first) until `needed` + margin bytes are free."""
        margin = self.margin if margin is None else margin
        for entry in sorted(self.entries, key=lambda e: e[1]):
            if shutil.disk_usage(self.root).free >= needed + margin:
                return
            print(f"    (low disk space: deleting trash {entry[0].name})", flush=True)
            shutil.rmtree(entry[0], ignore_errors=True)
            self.entries.remove(entry)

    def empty(self) -> None:
        for path, _files in self.entries:
            shutil.rmtree(path, ignore_errors=True)
        self.entries.clear()
        # left-overs of earlier runs killed before their end
        for path in self.root.iterdir():
            shutil.rmtree(path, ignore_errors=True)


TIMEOUT = float(os.environ.get("BENCH_TIMEOUT", 1800))     # seconds per run


def start(tool: Tool, src: Path, dst: Path) -> subprocess.Popen[bytes]:
    """Start tool in its own session, so a timeout can kill its whole process group."""
    return subprocess.Popen(tool.argv(src, dst), env=tool_env(), cwd=REPO_ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)


def finish(process: subprocess.Popen[bytes], timeout: float | None = None) -> tuple[int, str]:
    """Wait up to timeout (default TIMEOUT); (exit code, error text or "")."""
    timeout = timeout or TIMEOUT
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, 9)
        process.communicate()
        return -9, f"timed out after {timeout:.0f} s (BENCH_TIMEOUT or the case's limit), killed"
    except BaseException:                      # Ctrl-C / SIGTERM: leave no copier behind
        os.killpg(process.pid, 9)
        process.wait()
        raise
    if process.returncode == 0:
        return 0, ""
    tail = (stderr or stdout).decode(errors="replace").strip().splitlines()[-3:]
    return process.returncode, f"exit {process.returncode}: " + " | ".join(tail)[:300]


def timed_run(tool: Tool, src: Path, dst: Path, rnd: int,
              timeout: float | None = None) -> Measurement:
    """Run tool once (os.sync() first, untimed); wall time and children CPU time."""
    os.sync()
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    code, error = finish(start(tool, src, dst), timeout)
    seconds = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return Measurement(tool.label, rnd, seconds, cpu, code == 0, error)


def median_ratios(result: CaseResult, num: str, den: str) -> dict[str, float | list[float] | None]:
    """num/den computed per round (same round only), then the median of those."""
    a, b = result.by_round(num), result.by_round(den)
    per_round = [a[r] / b[r] for r in sorted(a) if r in b and b[r] > 0]
    return {"per_round": per_round, "median": statistics.median(per_round) if per_round else None}


def evaluate(result: CaseResult, pairs: list[tuple[str, str]], targets: list[Target]) -> None:
    """Fill result.ratios for pairs and targets, and result.checks for targets."""
    for num, den in pairs + [(t.num, t.den) for t in targets if t.den]:
        result.ratios[f"{num} / {den}"] = median_ratios(result, num, den)
    for target in targets:
        if target.den is None:
            stats = result.stats(target.num)
            value = stats["median"] if stats else None
        else:
            value = result.ratios[f"{target.num} / {target.den}"]["median"]
        passed = None if value is None else bool(value <= target.limit)
        result.checks.append(Check(target.text, value, target.limit, passed))


class SkipCase(Exception):
    """Raised by a case's setup when the case cannot run here (the message says why)."""


def _describe(m: Measurement, metric: str) -> str:
    if not m.ok:
        return f"FAILED after {m.seconds:.2f} s: {m.error}"
    text = f"{m.seconds:9.3f} s   cpu {m.cpu_seconds:7.2f} s"
    if metric != "seconds":
        text += f"   {metric} {m.extra[metric]:8.1f}"
    return text


def run_case(case, rounds: int) -> CaseResult:  # case: cases.Case (duck-typed, no cycle)
    """Set the case up, run its tools interleaved (A B C A B C ...) for `rounds`, evaluate."""
    result = CaseResult(case.name, case.description, case.metric, rounds)
    tools: list[Tool] = []
    for tool in case.contenders():
        reason = case.unavailable(tool)
        if reason:
            result.skipped[tool.label] = reason
            if not tool.is_mirror:                   # mirror_missing() printed its reason once
                print(f"  skip {tool.label}: {reason}", flush=True)
        else:
            tools.append(tool)
    result.labels = [tool.label for tool in tools]
    if not tools:
        return result
    try:
        case.setup(tools)
        result.description = case.description          # setup may add what it found
        for rnd in range(1, rounds + 1):
            case.before_round(rnd)
            for tool in tools:
                src, dst = case.prepare(tool, rnd)
                measurement = case.run(tool, src, dst, rnd)
                if measurement.ok:
                    problem = case.verify(tool, src, dst, rnd)
                    if problem:
                        measurement.ok, measurement.error = False, f"verify: {problem}"
                result.measurements.append(measurement)
                print(f"  round {rnd} {tool.label:<14} {_describe(measurement, case.metric)}",
                      flush=True)
                case.after(tool, rnd, dst)
    except SkipCase as reason:
        for label in result.labels:
            result.skipped[label] = str(reason)
        result.labels = []
        print(f"  skip case {case.name}: {reason}", flush=True)
    finally:
        case.teardown(result)
    evaluate(result, case.pairs(tools), case.targets())
    return result
