"""The MPI engine: a real mpiexec job copies as the local Pool does; a dead rank ends the job cleanly."""
from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import build, every_case, link_groups, run_mirror, snapshot, temp_files
from mirror import Options, check_tree, sync_tree
from mirror.run.mpi import MAX_BUNDLE, PRIVATE_NAMES, Bundler


def find_mpiexec() -> str | None:
    """The mpiexec of this Python's environment (the mpich wheel puts it beside python), else PATH's."""
    beside = Path(sys.executable).parent / "mpiexec"
    return str(beside) if beside.exists() else shutil.which("mpiexec")


def mpi_missing() -> str | None:
    """Why the MPI tests cannot run here, or None."""
    if importlib.util.find_spec("mpi4py") is None or find_mpiexec() is None:
        return ("needs mpi4py and an mpiexec for this Python: make test installs the mpich and "
                "mpi4py wheels, and could not here")
    return None


needs_mpi = pytest.mark.skipif(mpi_missing() is not None, reason=str(mpi_missing()))
BIG_STUCK = (20 << 20) + 12345   # a big file (a temporary name of its own), of a size nothing else has
SMALL_STUCK = 7777                 # a small one

# sitecustomize for the job's ranks: the copy of the file of $STUCK_SIZE bytes stops halfway,
# and its rank writes its pid to $STUCK_NOTES; it goes on only after a stop signal (a SIGKILL
# ends it there).
HOOK = """
import os, time
notes = os.environ.get("STUCK_NOTES")
if notes:
    from mirror.run import fastcopy, mpi
    real, stuck = fastcopy.Copier.__call__, int(os.environ["STUCK_SIZE"])

    from mirror import core
    if core.copy_files is not None:  # the compiled copy leaves the stuck file to the Copier
        real_files = core.copy_files

        def copy_files(src_fd, dst_fd, actions, *rest):
            sizes = [action.src.size for action in actions]
            if stuck not in sizes:
                return real_files(src_fd, dst_fd, actions, *rest)
            before = real_files(src_fd, dst_fd, actions[:sizes.index(stuck)], *rest) if sizes[0] != stuck else []
            return before if before and before[-1] < 0 else before + [-11]  # declined: EAGAIN
        core.copy_files = copy_files

    def copy(self, src_fd, dst_fd, size, on_bytes):
        if size != stuck:
            return real(self, src_fd, dst_fd, size, on_bytes)
        done = real(self, src_fd, dst_fd, size // 2, on_bytes)
        with open(notes + ".part", "w") as out:
            out.write(str(os.getpid()))
        os.rename(notes + ".part", notes)
        while not mpi._stop:
            time.sleep(0.01)
        on_bytes(0)  # the copy's next safe point: a stopped rank leaves here
        return done

    fastcopy.Copier.__call__ = copy
"""


def mpi_command(ranks: int, *args) -> list[str]:
    return [find_mpiexec(), "-n", str(ranks), sys.executable, "-m", "mpi4py.futures", "-m", "mirror",
            *map(os.fsdecode, args)]


def run_job(ranks: int, *args, env: dict | None = None) -> subprocess.CompletedProcess:
    """`mpiexec -n RANKS python -m mpi4py.futures -m mirror ARGS`, as a user on a cluster runs it."""
    return subprocess.run(mpi_command(ranks, *args), capture_output=True, text=True, timeout=120, env=env)


def summary(result: subprocess.CompletedProcess) -> dict:
    return json.loads(result.stdout.splitlines()[-1])


def stuck_env(tmp_path: Path, size: int) -> tuple[dict, Path]:
    """The environment of a job whose rank stops halfway through the file of `size` bytes, and
    the file where that rank's pid will appear."""
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(HOOK)
    notes = tmp_path / "stuck-pid"
    path = os.pathsep.join(filter(None, [str(hook), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "PYTHONPATH": path, "STUCK_NOTES": str(notes), "STUCK_SIZE": str(size)}, notes


def wait_for_stuck_rank(job: subprocess.Popen, notes: Path) -> int:
    """The pid of the rank stopped halfway through the file (the job must not end before)."""
    deadline = time.monotonic() + 60
    while not notes.exists():
        assert job.poll() is None, f"the job ended first: {job.communicate()}"
        assert time.monotonic() < deadline, "no rank reached the file"
        time.sleep(0.01)
    return int(notes.read_text())


def files_in(root) -> dict[bytes, bytes]:
    """Every regular file below root under its final name (temporary names left out): its bytes."""
    found = {}
    base = os.fsencode(root)
    for folder, _dirs, names in os.walk(base):
        for name in names:
            path = os.path.join(folder, name)
            if os.path.isfile(path) and not os.path.islink(path) and not name.startswith(b".mirror-tmp-"):
                with open(path, "rb") as data:
                    found[os.path.relpath(path, base)] = data.read()
    return found


def spread_tree(tmp_path: Path, extra: dict | None = None) -> bytes:
    """Enough folders and files that every rank gets some, with every kind of entry."""
    spec = {**every_case(), **{f"many/f{i}": b"x" * i for i in range(700)},
            **{f"d{d}/e{e}/f{f}": os.urandom(64) for d in range(6) for e in range(6) for f in range(5)},
            "linked/a": b"hard", **(extra or {})}
    src = build(tmp_path / "src", spec)
    os.link(src + b"/linked/a", src + b"/linked/b")
    return src


@needs_mpi
def test_an_mpi_job_makes_the_same_tree_and_summary_as_the_pool(tmp_path):
    src = spread_tree(tmp_path, {"big": os.urandom(17 << 20)})
    stale = {"stale/x": b"old", "a/b.txt": b"other", "exec.sh": b"?"}
    by_pool = build(tmp_path / "pool", stale)
    by_mpi = build(tmp_path / "mpi", stale)

    pool = sync_tree(src, by_pool, Options(jobs=2, hard_links=True)).to_dict()
    job = run_job(3, "sync", "-H", "--json", "--engine", "mpi", src, by_mpi)

    assert job.returncode == 0, job.stderr
    mpi = summary(job)
    assert snapshot(by_mpi) == snapshot(by_pool) and link_groups(by_mpi) == link_groups(by_pool)
    ignored = {"elapsed_s", "jobs", "workers_used"}
    assert {k: v for k, v in mpi.items() if k not in ignored} == {k: v for k, v in pool.items() if k not in ignored}
    assert (mpi["jobs"], mpi["workers_used"]) == (2, 2), "both worker ranks copied"
    check = run_job(3, "check", "-c", "-H", "--json", "--engine", "mpi", src, by_mpi)
    assert (check.returncode, summary(check)["differences"], summary(check)["workers_used"]) == (0, 0, 2)


# sitecustomize for the job's ranks: each part of a big file a rank copies adds its pid to $PART_NOTES
PART_HOOK = """
import os
notes = os.environ.get("PART_NOTES")
if notes:
    from mirror.run import worker
    real = worker.copy_part

    def logged(applier, part, on_bytes):
        with open(notes, "a") as out:
            out.write(f"{os.getpid()}\\n")
        return real(applier, part, on_bytes)

    worker.copy_part = logged
"""


@needs_mpi
def test_the_parts_of_a_big_file_are_copied_by_several_ranks(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    with open(src / "image", "wb") as image:
        image.truncate(200 << 20)  # with --no-sparse: 200 MiB to write, in 4 parts of 64 MiB
    hook, notes = tmp_path / "hook", tmp_path / "parts"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(PART_HOOK)
    path = os.pathsep.join(filter(None, [str(hook), os.environ.get("PYTHONPATH")]))

    job = run_job(3, "copy", "--json", "--no-sparse", "--engine", "mpi", src, tmp_path / "dst",
                  env={**os.environ, "PYTHONPATH": path, "PART_NOTES": str(notes)})

    assert job.returncode == 0, job.stderr
    assert snapshot(tmp_path / "dst") == snapshot(src) and temp_files(tmp_path / "dst") == []
    ranks = notes.read_text().split()
    assert len(ranks) == 4 and len(set(ranks)) == 2, "both worker ranks copied parts of the one file"


@needs_mpi
def test_auto_runs_on_the_ranks_of_a_job_and_on_the_pool_elsewhere(tmp_path):
    src = build(tmp_path / "src", {f"d{i}/f": b"x" for i in range(20)})

    in_job = run_job(2, "copy", "--json", src, tmp_path / "in-job")
    alone = run_mirror("copy", "--json", "-j", "3", src, tmp_path / "alone")

    assert in_job.returncode == 0 and alone.returncode == 0, in_job.stderr + alone.stderr
    assert (summary(in_job)["jobs"], summary(in_job)["workers_used"]) == (1, 1)  # the one worker rank
    assert (summary(alone)["jobs"], summary(alone)["workers_used"]) == (3, None)  # the Pool


@needs_mpi
def test_the_private_name_of_mpi4py_the_engine_uses_is_still_there():
    """An mpi4py that moves it fails here, naming it, instead of every MPI run failing."""
    code = ("import mpi4py; mpi4py.rc.initialize = False\n"  # look, without starting MPI
            "from mpi4py.futures import _core; print(hasattr(_core, 'SharedPool'))")
    found = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)

    assert found.stdout.strip() == "True", f"mpi4py no longer has {list(PRIVATE_NAMES)}: see mirror/run/mpi.py"


def sizes(bundles) -> list[int]:
    return [len(bundle) for bundle in bundles]


def test_bundles_start_with_one_task_and_grow_at_most_twofold_from_one_that_came_back():
    bundler = Bundler(width=2)
    bundler.queue.extend(range(100))

    first = sizes(bundler.take(1))        # nothing measured yet
    bundler.learn(1, 0.001)               # a quick root folder: 200 such tasks would fit in 0.2 s
    second = sizes(bundler.take(1))       # but what follows may be far slower
    bundler.learn(2, 0.002)

    assert (first, second, sizes(bundler.take(1))) == ([1], [2], [4])


def test_a_bundle_carries_a_fifth_of_a_second_of_work_and_more_with_many_ranks():
    one_node, many_nodes = Bundler(width=2), Bundler(width=400)
    for bundler in (one_node, many_nodes):
        bundler.learn(MAX_BUNDLE, MAX_BUNDLE * 0.01)  # 10 ms a task

    # 0.2 s of work; 400 ranks x 5 ms = 2 s, so that rank 0 stays under ~10% busy handing them out
    assert (one_node.size(), many_nodes.size()) == (20, 200)


def test_no_bundle_holds_more_than_an_even_share_of_what_waits():
    bundler = Bundler(width=2)
    bundler.learn(MAX_BUNDLE, MAX_BUNDLE * 0.001)  # 1 ms a task: bundles of 200 would do
    bundler.queue.extend(range(10))

    bundles = bundler.take(4)

    assert sizes(bundles) == [3, 3, 2, 2] and [task for bundle in bundles for task in bundle] == list(range(10))


def test_mpi_outside_a_job_is_a_usage_error_before_anything_is_written(tmp_path):
    src = build(tmp_path / "src", {"a": b"x"})

    alone = run_mirror("copy", "--engine", "mpi", src, tmp_path / "dst")
    # every rank of `mpiexec -n 3 python -m mirror` would copy on its own: refused, auto too
    ranks = run_mirror("copy", src, tmp_path / "dst", env={**os.environ, "PMI_SIZE": "3"})

    assert alone.returncode == ranks.returncode == 2
    assert alone.stderr.startswith("mirror: error: --engine mpi needs") and alone.stderr.count("\n") == 1
    assert ranks.stderr == ("mirror: error: started as one of 3 MPI ranks, but not through mpi4py.futures: "
                            "launch as mpiexec -n N python -m mpi4py.futures -m mirror ...\n")
    assert not (tmp_path / "dst").exists()


@needs_mpi
@pytest.mark.timeout(180)
def test_a_rank_killed_mid_run_ends_the_job_and_a_rerun_completes(tmp_path):
    src = spread_tree(tmp_path, {"stuck.bin": os.urandom(BIG_STUCK)})
    dst = tmp_path / "dst"
    env, notes = stuck_env(tmp_path, BIG_STUCK)
    job = subprocess.Popen(mpi_command(3, "sync", "-H", "--json", src, dst), env=env,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        os.kill(wait_for_stuck_rank(job, notes), signal.SIGKILL)
        job.communicate(timeout=60)  # no hang: MPI ends the whole job
    finally:
        job.kill()
        job.wait()

    assert job.returncode != 0
    source = files_in(src)
    assert all(source[path] == data for path, data in files_in(dst).items()), "a partial file under a final name"
    assert b"stuck.bin" not in files_in(dst)
    assert temp_files(dst), "the half-copied file waits under its temporary name"
    rerun = run_job(3, "sync", "-H", "--json", src, dst)
    assert rerun.returncode == 0, rerun.stderr
    assert summary(rerun)["temp_files_removed"] >= 1 and temp_files(dst) == []
    assert check_tree(src, dst, Options(checksum=True, hard_links=True)).differences == []


@needs_mpi
@pytest.mark.timeout(180)
def test_a_stop_signal_stops_every_rank_and_counts_each_file_in_place(tmp_path):
    # The rank stops in the middle of a folder: the 400 files it copied before are reported
    # only with its stopped task, and must be counted all the same.
    src = spread_tree(tmp_path, {**{f"m/f{i:03}": b"y" * 100 for i in range(400)},
                                 "m/stuck": os.urandom(SMALL_STUCK)})
    dst = tmp_path / "dst"
    env, notes = stuck_env(tmp_path, SMALL_STUCK)
    job = subprocess.Popen(mpi_command(3, "copy", "--json", src, dst), env=env,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for_stuck_rank(job, notes)
        job.send_signal(signal.SIGTERM)  # mpiexec passes it to every rank, as srun and scancel do
        out, err = job.communicate(timeout=60)
    finally:
        job.kill()
        job.wait()

    assert job.returncode == 143, err
    stopped = json.loads(out.splitlines()[-1])
    assert stopped["interrupted"] and stopped["exit_code"] == 143
    in_place = files_in(dst)
    assert stopped["files_copied"] == len(in_place) and b"m/stuck" not in in_place
    assert len([path for path in in_place if path.startswith(b"m/")]) == 400
    assert temp_files(dst) == [], "the stopped rank removed the file it was writing"
