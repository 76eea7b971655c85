"""Engines: the Pool and the inline engine drive the same runner to the same result."""
from __future__ import annotations

import multiprocessing
import multiprocessing.managers
import multiprocessing.pool
import multiprocessing.process
import os

import pytest

from conftest import build, every_case, link_groups, snapshot
from mirror import Options, check_tree, sync_tree
from mirror.events import Finished
from mirror.run.engine import InlineEngine
from mirror.run.pool import PRIVATE_NAMES, PoolEngine


def test_the_pool_and_the_inline_engine_give_the_same_tree_and_report(tmp_path):
    src = build(tmp_path / "src", {**every_case(), **{f"many/f{i}": b"x" * i for i in range(700)},
                                   "linked/a": b"hard", "big": os.urandom(17 << 20)})
    os.link(src + b"/linked/a", src + b"/linked/b")
    results = {}
    for name, engine in (("pool", PoolEngine), ("inline", InlineEngine)):
        dst = build(tmp_path / name, {"stale/x": b"old", "a/b.txt": b"other", "exec.sh": b"?"})
        events = []
        report = sync_tree(src, dst, Options(jobs=2, hard_links=True), on_event=events.append,
                           engine=engine)
        assert report.exit_code == 0, (name, report.errors)
        results[name] = (snapshot(dst), link_groups(dst), report.to_dict(),
                         sorted(e.path for e in events if isinstance(e, Finished)))
        assert check_tree(src, dst, Options(hard_links=True, checksum=True)).differences == []
    pool, inline = results["pool"], results["inline"]
    assert pool[0] == inline[0] and pool[1] == inline[1] and pool[3] == inline[3]
    # jobs: the engine's width (the inline engine runs one task at a time); workers_used: the
    # Pool does not count them
    ignored = {"elapsed_s", "jobs", "workers_used"}
    assert {k: v for k, v in pool[2].items() if k not in ignored} == {
        k: v for k, v in inline[2].items() if k not in ignored}
    assert (pool[2]["jobs"], inline[2]["jobs"]) == (2, 1)
    assert (pool[2]["workers_used"], inline[2]["workers_used"]) == (None, 1)


def owner_of(name: str):
    """The object each private name hangs on, made fresh, and the attribute's path below it."""
    holder, _, attribute = name.partition(".")
    return holder, attribute.split(".")


@pytest.mark.timeout(60)
def test_every_private_name_the_pool_engine_uses_is_still_there():
    """A Python that moves one fails here, with its name, instead of hanging a run."""
    context = multiprocessing.get_context("fork")
    manager = multiprocessing.managers.SyncManager(ctx=context)
    manager.start()  # before the Pool: its threads would make this fork warn
    pool = context.Pool(1)
    result = pool.apply_async(os.getpid)
    result.get(10)
    holders = {"AsyncResult": result, "Pool": pool, "BaseManager": manager,
               "BaseProxy": multiprocessing.managers.BaseProxy, "process": multiprocessing.process}
    try:
        missing = []
        for name in PRIVATE_NAMES:
            holder, path = owner_of(name)
            value = holders[holder]
            for part in path:
                if not hasattr(value, part):
                    missing.append(name)
                    break
                value = getattr(value, part)
        assert missing == [], f"multiprocessing no longer has {missing}: see PRIVATE_NAMES in mirror/run/pool.py"
    finally:
        pool.terminate()
        manager.shutdown()


# Each process that lists a SRC folder notes its pid: which processes did the comparing.
WHO_LISTS = """
import os, sys, time
from mirror.plan import march
notes, real = sys.argv.pop(1), march.Planner.listings
def listed(self, *args):
    with open(notes, "a") as out:
        out.write(f"{os.getpid()}\\n")
    time.sleep(0.002)  # a slow store: the folders spread over every worker
    return real(self, *args)
march.Planner.listings = listed
sys.argv[0] = "mirror"
from mirror.ui.cli import main
main()
"""


def test_check_runs_on_jobs_workers_and_shows_progress(tmp_path):
    import json
    import subprocess
    import sys
    spec = {f"d{folder}/f{number}": b"x" for folder in range(300) for number in range(3)}
    src = build(tmp_path / "src", spec)
    dst = build(tmp_path / "dst", {**spec, "d7/f1": b"different", "extra": b"only in DST"})
    notes = tmp_path / "pids"

    result = subprocess.run([sys.executable, "-c", WHO_LISTS, notes, "check", "-j", "4", "--progress",
                             "--json", src, dst], capture_output=True, text=True, timeout=120)

    assert result.returncode == 1, result.stderr
    lines = result.stdout.splitlines()
    assert "* d7/f1  (size differs)" in lines and "- extra" in lines
    assert json.loads(lines[-1])["jobs"] == 4
    assert "progress:" in result.stderr  # off a terminal, plain progress lines
    assert len(set(notes.read_text().split())) == 4, "four workers listed and compared the folders"
