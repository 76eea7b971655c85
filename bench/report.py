"""Output: a console table per case, results.json, results.png (matplotlib, optional), markdown."""
from __future__ import annotations

import json
import math
from dataclasses import asdict
from pathlib import Path

from .runner import Check, CaseResult


def _unit(result: CaseResult) -> str:
    return "s" if result.metric == "seconds" else "MiB"


def _num(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _verdict(check: Check) -> str:
    return "n/a" if check.passed is None else "PASS" if check.passed else "MISS"


def print_case(result: CaseResult, quick: bool) -> None:
    """The console table: median/min/max per tool, then every ratio and the targets."""
    unit = _unit(result)
    print(f"\n== {result.name}: {result.description} ({result.rounds} rounds)")
    print(f"   {'tool':<16}{'median ' + unit:>12}{'min':>10}{'max':>10}{'cpu s':>9}{'ok':>5}")
    for label in result.labels:
        stats = result.stats(label)
        runs = [m for m in result.measurements if m.label == label]
        if stats is None:
            print(f"   {label:<16}{'failed':>12}   {runs[0].error if runs else ''}")
            continue
        print(f"   {label:<16}{stats['median']:>12.3f}{stats['min']:>10.3f}{stats['max']:>10.3f}"
              f"{stats['cpu_median']:>9.2f}{stats['n']:>3}/{len(runs)}")
    for label, reason in result.skipped.items():
        print(f"   {label:<16}{'skipped':>12}   {reason}")
    targets = {check.text: check for check in result.checks}
    if result.ratios:
        print(f"   {'ratio (median of per-round ratios)':<38}{'value':>8}")
        for name, ratio in result.ratios.items():
            print(f"   {name:<38}{_num(ratio['median']):>8}")
    for check in targets.values():
        note = "  (quick scale: indicative only)" if quick else ""
        print(f"   target {check.text:<40}{_num(check.value):>9}  {_verdict(check)}{note}")
    for note in result.notes:
        print(f"   note: {note}")


def markdown(results: list[CaseResult], quick: bool) -> str:
    """Two README-ready tables: timings with mirror's ratio per tool, then the targets."""
    lines = ["| case | tool | median | min | max | mirror / tool |", "|---|---|---:|---:|---:|---:|"]
    reasons: list[str] = []
    for result in results:
        unit = _unit(result)
        mirrors = [label for label in result.labels if label.startswith("mirror")]
        for label in result.labels:
            stats = result.stats(label)
            cell = label.replace("|", "\\|")
            if stats is None:
                lines.append(f"| {result.name} | {cell} | failed | | | |")
                continue
            ratio = ""
            if len(mirrors) == 1 and label not in mirrors:
                value = result.ratios.get(f"{mirrors[0]} / {label}", {}).get("median")
                ratio = _num(value, 2)
            lines.append(f"| {result.name} | {cell} | {stats['median']:.3f} {unit} | "
                         f"{stats['min']:.3f} | {stats['max']:.3f} | {ratio} |")
        for label, reason in result.skipped.items():
            if reason not in reasons:
                reasons.append(reason)
            mark = reasons.index(reason) + 1
            lines.append(f"| {result.name} | {label} | skipped [{mark}] | | | |")
    if reasons:
        lines += [""] + [f"[{n}] {reason}" for n, reason in enumerate(reasons, 1)]
    lines += ["", "| case | target | measured | result |", "|---|---|---:|---|"]
    for result in results:
        for check in result.checks:
            lines.append(f"| {result.name} | {check.text} | {_num(check.value)} | "
                         f"{_verdict(check)}{' (quick)' if quick else ''} |")
    return "\n".join(lines)


def write_json(results: list[CaseResult], meta: dict[str, object], path: Path) -> None:
    cases = []
    for result in results:
        data = asdict(result)
        data["stats"] = {label: result.stats(label) for label in result.labels}
        cases.append(data)
    path.write_text(json.dumps({"meta": meta, "cases": cases}, indent=2) + "\n")


def write_png(results: list[CaseResult], path: Path, title: str) -> str:
    """Horizontal bars (median, whiskers min-max) per case; returns what happened."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed (pip install '.[bench]'): no chart written"
    shown = [r for r in results if any(r.stats(label) for label in r.labels)]
    if not shown:
        return "nothing measured: no chart written"
    cols = 2 if len(shown) > 1 else 1
    rows = math.ceil(len(shown) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(6.5 * cols, 0.5 + 2.6 * rows), squeeze=False)
    for ax in axes.flat[len(shown):]:
        ax.set_visible(False)
    for ax, result in zip(axes.flat, shown):
        labels = [label for label in result.labels if result.stats(label)]
        stats = [result.stats(label) for label in labels]
        medians = [s["median"] for s in stats]
        errors = [[s["median"] - s["min"] for s in stats], [s["max"] - s["median"] for s in stats]]
        colors = ["tab:blue" if label.startswith("mirror") else "tab:gray" for label in labels]
        ax.barh(labels, medians, xerr=errors, color=colors, capsize=3)
        ax.invert_yaxis()
        ax.set_title(f"{result.name}: {result.description}", fontsize=8)
        ax.set_xlabel("peak PSS (MiB)" if result.metric != "seconds" else "seconds (median)")
        ax.tick_params(labelsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return f"chart written to {path}"
