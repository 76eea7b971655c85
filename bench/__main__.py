"""CLI: `python -m bench [--cases small,large,...] [--rounds N] [--quick] [--out DIR]`."""
from __future__ import annotations

import argparse
import datetime
import os
import platform
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from . import report
from .cases import CASE_NAMES, Context, build_cases
from .runner import CaseResult, Trash, run_case
from .tools import describe_mirror, mirror_fingerprint

DEFAULT_OUT = Path(__file__).resolve().parent / "results"
DEFAULT_DATA = Path(os.environ.get("BENCH_DATA", "/work/benchdata"))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Benchmark mirror against cp -a, rsync -a, tar | tar and shutil.copytree. "
                    "MIRROR_CMD='...' replaces mirror's command line ({src} {dst} {jobs} {cmd} "
                    "are filled in, else SRC DST are appended).")
    parser.add_argument("--cases", default=",".join(CASE_NAMES),
                        help=f"comma-separated, from {','.join(CASE_NAMES)} (default: all); a "
                             f"part by its own name too, e.g. jobs-large, remote-files-capped")
    parser.add_argument("--rounds", type=int, default=None,
                        help="rounds per case (default 5; 3 for large, jobs-large, slowfs, remote"
                             "; 2 with --quick; 1 for memory)")
    parser.add_argument("--quick", action="store_true", help="trees ~10-50x smaller: a smoke run")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT,
                        help=f"where results.json/.png go (default {DEFAULT_OUT})")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA,
                        help=f"scratch folder for trees and copies ($BENCH_DATA, default "
                             f"{DEFAULT_DATA})")
    parser.add_argument("--mirror-jobs", type=int, default=os.cpu_count() or 1,
                        help="mirror --jobs outside the jobs/slowfs cases (default: CPU count)")
    parser.add_argument("--update-command", choices=("copy", "sync"), default="copy",
                        help="mirror subcommand for noop and touch1pct (default copy, like "
                             "rsync -a without --delete)")
    parser.add_argument("--keep-trash", action="store_true",
                        help="leave the moved-aside copies in DATA/trash instead of deleting them")
    parser.add_argument("--no-warmup", action="store_true",
                        help="do not read each source tree once before round 1")
    args = parser.parse_args(argv)
    args.cases = [name.strip() for name in args.cases.split(",") if name.strip()]
    unknown = sorted(name for name in args.cases if name.split("-")[0] not in CASE_NAMES)
    if unknown:
        parser.error(f"unknown case(s) {', '.join(unknown)}; choose from {', '.join(CASE_NAMES)}")
    if args.rounds is not None and args.rounds < 1:
        parser.error("--rounds must be at least 1")
    return args


def machine() -> dict[str, object]:
    fs = subprocess.run(["stat", "-f", "-c", "%T", str(DEFAULT_DATA.parent)], capture_output=True,
                        text=True, check=False).stdout.strip()
    return {"cpus": os.cpu_count(), "kernel": platform.release(), "python": platform.python_version(),
            "filesystem": fs, "mirror": describe_mirror(),
            "date": datetime.datetime.now().isoformat(timespec="seconds")}


def _raise_exit(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)           # runs the finally blocks: unmount, restore, trash


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _raise_exit)
    args.data.mkdir(parents=True, exist_ok=True)
    trash = Trash(args.data / "trash")
    ctx = Context(args.data, trash, args.quick, args.mirror_jobs, args.update_command,
                  warmup=not args.no_warmup)
    registry = build_cases(ctx)
    meta = {**machine(), "args": {k: str(v) for k, v in vars(args).items()},
            "notes": ["page cache not dropped (needs root and disturbs other work); sources are "
                      "read once before round 1 so every tool starts warm",
                      "os.sync() before every timed run, untimed",
                      "mirror runs from compiled bytecode, as installed (PYTHONDONTWRITEBYTECODE "
                      "is removed from the contenders' environment)",
                      "old copies are renamed into a trash folder, never deleted between rounds"]}
    print(f"mirror: {meta['mirror']}  data: {args.data}  "
          f"scale: {'quick' if args.quick else 'full'}", flush=True)
    print("note: the page cache is not dropped between runs; sources are pre-read (warm).")
    results: list[CaseResult] = []
    started = time.perf_counter()
    try:
        for name in args.cases:
            chosen = registry.get(name) or [case for case in registry[name.split("-")[0]]
                                             if case.name == name]
            if not chosen:
                print(f"\nno case named {name}", flush=True)
            for case in chosen:
                rounds = args.rounds or (min(case.default_rounds, 2) if args.quick
                                         else case.default_rounds)
                print(f"\n-- {case.name}: {case.description}, {rounds} rounds", flush=True)
                fingerprint = mirror_fingerprint()
                result = run_case(case, rounds)
                if any(label.startswith("mirror") for label in result.labels):
                    result.notes.append(f"mirror sources sha256 {fingerprint} at case start")
                results.append(result)
                report.print_case(result, args.quick)
    finally:
        if results:
            args.out.mkdir(parents=True, exist_ok=True)
            meta["seconds_total"] = round(time.perf_counter() - started, 1)
            report.write_json(results, meta, args.out / "results.json")
            print(f"\nresults written to {args.out / 'results.json'}")
            print(report.write_png(results, args.out / "results.png",
                                   f"mirror benchmark ({'quick' if args.quick else 'full'} scale, "
                                   f"{meta['cpus']} CPUs, {meta['date']})"))
            print("\n" + report.markdown(results, args.quick) + "\n")
        if args.keep_trash:
            print(f"trash kept in {trash.root} ({shutil.disk_usage(trash.root).free / 2**30:.0f} "
                  f"GiB free)")
        else:
            print(f"deleting trash in {trash.root} ...", flush=True)
            trash.empty()
    return 0


if __name__ == "__main__":
    sys.exit(main())
