"""Faults injected into real runs: kill -9, dead workers, a dead manager, full disks, races."""
from __future__ import annotations

import multiprocessing
import os
import random
import signal
import subprocess
import sys
import time

import pytest

from conftest import build, needs_root, run_mirror, snapshot, temp_files
from mirror.run.pool import stop_processes

SMALL_TREE = {**{f"d{i % 20}/f{i}": os.urandom(1 + i % 4000) for i in range(600)},
              **{f"big/b{i}": os.urandom(2 << 20) for i in range(3)}}


# mirror, with big files copied whole by one worker (not in parts by several): the tests of a
# huge file kill or watch the one process that writes it
WHOLE_FILES = "import sys; from mirror.run import runner; runner.SPLIT_MIN = 1 << 62; " \
              "sys.argv[0] = 'mirror'; from mirror.__main__ import run; run()"


def start(*args, env=None, whole: bool = False) -> subprocess.Popen:
    command = [sys.executable, *(["-c", WHOLE_FILES] if whole else ["-m", "mirror"]), *map(str, args)]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, env=env)


def final_files_are_complete(src, dst) -> None:
    """Every file under its final name in DST has SRC's whole content (DST started empty)."""
    for rel, (kind, *_rest) in snapshot(dst, mtimes=False).items():
        path = os.path.join(os.fsencode(dst), rel)
        if os.path.isfile(path) and not os.path.islink(path) and rel not in temp_files(dst):
            with open(path, "rb") as copy, open(os.path.join(os.fsencode(src), rel), "rb") as original:
                assert copy.read() == original.read(), rel


def wait_for_temp(dst, timeout=30.0) -> None:
    deadline = time.monotonic() + timeout
    while not (os.path.isdir(dst) and temp_files(dst)):
        assert time.monotonic() < deadline, "the copy never started"
        time.sleep(0.005)


def test_kill_9_at_ten_moments_then_the_next_run_repairs(tmp_path):
    src = tmp_path / "src"
    build(src, SMALL_TREE)
    with open(src / "big/sparse", "wb") as stream:  # slower with --no-sparse, for kills mid-write
        stream.truncate(128 << 20)
    moments = random.Random(42).sample([i / 100 for i in range(5, 60)], 10)
    left_temp_files = 0
    for number, moment in enumerate(moments):
        dst = tmp_path / f"dst{number}"
        process = start("copy" if number % 2 else "sync", src, dst, "-j", "3", "--no-sparse")
        if number < 5:
            time.sleep(moment)           # anywhere: start-up, walk, copies, the end
        else:
            wait_for_temp(dst)           # while files are being written
            time.sleep(moment / 20)
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        if dst.exists():
            final_files_are_complete(src, dst)
            left_temp_files += bool(temp_files(dst))

        repair = run_mirror("sync" if number % 2 else "copy", src, dst)

        assert repair.returncode == 0, (moment, repair.stderr)
        assert temp_files(dst) == []
        assert snapshot(dst) == snapshot(src)
    assert left_temp_files, "no kill landed while a file was being written"


def children(pid: int) -> list[tuple[int, int]]:
    """(start time, pid) of the processes whose parent is pid, oldest first."""
    found = []
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{entry}/stat") as stream:
                fields = stream.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append((int(fields[19]), int(entry)))
    return sorted(found)


def holders_of_temp(dst) -> list[int]:
    prefix = os.path.join(str(dst), ".mirror-tmp-")
    pids = []
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            links = [os.readlink(f"/proc/{entry}/fd/{fd}") for fd in os.listdir(f"/proc/{entry}/fd")]
        except OSError:
            continue
        if any(link.startswith(prefix) for link in links):
            pids.append(int(entry))
    return pids


def sparse_source(tmp_path, size=3 << 30):
    src = tmp_path / "src"
    src.mkdir()
    (src / "small").write_bytes(b"s")
    with open(src / "huge", "wb") as stream:
        stream.truncate(size)
    return src


def start_huge_copy(tmp_path, jobs: int):
    """A copy of a 1 GiB sparse file, once a worker writes it: (process, src, dst, writers)."""
    src = sparse_source(tmp_path, 1 << 30)
    dst = tmp_path / "dst"
    process = start("copy", src, dst, "-j", jobs, "--no-sparse", whole=True)  # every byte written: slow
    wait_for_temp(dst)
    deadline = time.monotonic() + 30
    while not (writers := holders_of_temp(dst)) and time.monotonic() < deadline:
        time.sleep(0.005)  # the file may be between its creation and its opening
    assert writers and process.pid not in writers
    return process, src, dst, writers


def test_a_killed_worker_does_not_hang_the_run(tmp_path):
    process, src, dst, workers = start_huge_copy(tmp_path, 2)
    os.kill(workers[0], signal.SIGKILL)

    stdout, stderr = process.communicate(timeout=90)

    assert process.returncode == 0, stderr  # the lost task ran again
    assert snapshot(dst) == snapshot(src)
    assert temp_files(dst) == []


@pytest.mark.parametrize("then", ["finish", "interrupt"])
def test_killed_idle_workers_do_not_hang_the_run(tmp_path, then):
    """An idle worker waits for tasks holding the Pool's task-queue lock: killed there, it
    would leave every other worker, and the Pool's own shutdown, waiting for it forever."""
    process, src, dst, busy = start_huge_copy(tmp_path, 3)
    manager, *workers = [pid for _, pid in children(process.pid)]  # the manager starts first
    idle = [pid for pid in workers if pid not in busy]
    assert len(busy) == 1 and len(idle) == 2, (manager, workers, busy)
    for pid in idle:
        os.kill(pid, signal.SIGKILL)
    if then == "interrupt":
        time.sleep(0.2)
        process.send_signal(signal.SIGINT)

    stdout, stderr = process.communicate(timeout=60)

    assert "Traceback" not in stderr
    assert temp_files(dst) == []
    if then == "finish":
        assert process.returncode == 0, stderr  # the folder's metadata still needed a worker
        assert snapshot(dst) == snapshot(src)
    else:
        assert process.returncode == 130, stderr
        assert not (dst / "huge").exists()


def test_a_killed_manager_ends_the_run_instead_of_hanging(tmp_path):
    src = sparse_source(tmp_path)
    dst = tmp_path / "dst"
    process = start("copy", src, dst, "-j", "2", "--json", "--no-sparse", whole=True)
    wait_for_temp(dst)
    manager = children(process.pid)[0][1]  # started first, before the pool
    os.kill(manager, signal.SIGKILL)

    stdout, stderr = process.communicate(timeout=90)

    assert process.returncode == 1, stderr
    assert "manager" in stderr and "Traceback" not in stderr
    os.truncate(src / "huge", 1 << 20)
    assert run_mirror("copy", src, dst).returncode == 0
    assert snapshot(dst) == snapshot(src) and temp_files(dst) == []


def test_two_concurrent_runs_the_second_exits_3(tmp_path):
    src = sparse_source(tmp_path, 2 << 30)
    dst = tmp_path / "dst"
    first = start("copy", src, dst, "--no-sparse", whole=True)
    wait_for_temp(dst)
    try:
        second = run_mirror("sync", src, dst)
    finally:
        os.killpg(first.pid, signal.SIGTERM)
        first.wait()
    assert second.returncode == 3 and "another mirror run" in second.stderr


def mount_tmpfs(where, options: str) -> None:
    where.mkdir()
    try:
        subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)],
                       check=True, capture_output=True)
    except (OSError, subprocess.CalledProcessError) as error:
        pytest.skip(f"cannot mount a tmpfs here: {error}")


@pytest.fixture
def small_disk(tmp_path):
    disk = tmp_path / "disk"
    mount_tmpfs(disk, "size=2m")
    yield disk
    subprocess.run(["umount", "-l", str(disk)], check=False)


@needs_root
def test_disk_full_keeps_old_versions_and_leaves_no_temp(tmp_path, small_disk):
    src = build(tmp_path / "src", {"a": b"A" * 900_000, "b": b"B" * 900_000, "c": b"C" * 900_000})
    dst = small_disk / "dst"
    build(dst, {"a": b"old a", "b": b"old b", "c": b"old c"})

    result = run_mirror("copy", src, dst, "--json", "--retries", "0")

    assert result.returncode == 1
    assert "No space left on device" in result.stderr
    contents = {name: (dst / name).read_bytes() for name in "abc"}
    for name, data in contents.items():
        assert data in (b"old " + name.encode(), name.upper().encode() * 900_000), name
    assert any(data.startswith(b"old") for data in contents.values())
    assert temp_files(dst) == []


@needs_root
def test_read_only_destination_is_refused_with_exit_2(tmp_path):
    src = build(tmp_path / "src", {"a": b"1"})
    readonly = tmp_path / "ro"
    mount_tmpfs(readonly, "size=1m,ro")
    try:
        result = run_mirror("copy", src, readonly)
    finally:
        subprocess.run(["umount", "-l", str(readonly)], check=False)
    assert result.returncode == 2 and "not writable" in result.stderr


def test_a_file_that_keeps_changing_fails_and_dst_keeps_its_old_version(make_tree, monkeypatch, pure_copy):
    from mirror import Options, copy_tree
    from mirror.plan import tree as copyfile  # where the check after a copy lives
    src = make_tree({"log": b"x" * 5000, "calm": b"c"})
    dst = make_tree({"log": b"old"})
    real_unchanged = copyfile.unchanged
    monkeypatch.setattr(copyfile, "unchanged", lambda before, after: (
        before.size != 5000 and real_unchanged(before, after)))  # "log" changes at every read

    report = copy_tree(src, dst, Options(jobs=2, retries=1))

    # retried: restarted at once twice (once an attempt: its listing is stale), tried again once
    assert report.files_failed == 1 and report.exit_code == 1 and report.retried == 3
    assert "changed while it was copied" in report.errors[0].message
    assert (dst / "log").read_bytes() == b"old"
    assert (dst / "calm").read_bytes() == b"c"
    assert temp_files(dst) == []


def test_a_change_during_the_copy_is_seen(tmp_path):
    from mirror.plan.scan import entry_from_stat
    from mirror.plan.tree import unchanged
    path = tmp_path / "f"
    path.write_bytes(b"12345")
    before = entry_from_stat(b"f", os.stat(path))
    with open(path, "r+b") as stream:  # same size, rewritten in place: ctime and mtime move
        time.sleep(0.01)
        stream.write(b"54321")
    assert unchanged(before, os.stat(path)) is False
    assert unchanged(entry_from_stat(b"f", os.stat(path)), os.stat(path)) is True


def test_no_helper_outlives_a_master_killed_with_9(tmp_path):
    src = sparse_source(tmp_path, 2 << 30)
    dst = tmp_path / "dst"
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    process = start("copy", src, dst, "-j", "2", "--no-sparse", env={**os.environ, "TMPDIR": str(tmp)}, whole=True)
    wait_for_temp(dst)
    helpers = [pid for _, pid in children(process.pid)]
    assert len(helpers) >= 3  # the manager and two workers

    process.kill()  # the master only, as the OOM killer would
    process.wait()

    deadline = time.monotonic() + 10
    while any(os.path.exists(f"/proc/{pid}") and not zombie(pid) for pid in helpers):
        assert time.monotonic() < deadline, "a helper process outlived its master"
        time.sleep(0.05)
    assert temp_files(dst) == [], "the worker removed its temporary file as it stopped"
    assert os.listdir(tmp) == [], "the killed manager left its socket's folder in TMPDIR"


def zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stream:
            return stream.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def test_retries_redo_only_the_failed_entry(make_tree, monkeypatch, pure_copy):
    from collections import Counter

    from mirror import Options, copy_tree
    from mirror.plan import tree as copyfile  # where the check after a copy lives
    from mirror.events import Finished
    src = make_tree({**{f"f{i}": b"x" * i for i in range(40)}, "growing": b"g" * 12345})
    dst = make_tree({})
    seen_once = []

    def changes_on_first_read(before, after):
        """The workers fork from this process: in them, "growing" changes during its first
        attempt (both its copy from the listing and the one from a fresh fstat)."""
        if before.size == 12345 and len(seen_once) < 2:
            seen_once.append(True)
            return False
        return real_unchanged(before, after)

    real_unchanged = copyfile.unchanged
    monkeypatch.setattr(copyfile, "unchanged", changes_on_first_read)
    events = []

    report = copy_tree(src, dst, Options(jobs=1, retries=2), on_event=events.append)

    assert report.exit_code == 0, report.errors
    assert report.retried == 2  # restarted at once from a fresh fstat, then tried again
    assert report.files_copied == 41, "each file once: the tree is not copied again"
    finished = Counter(e.path for e in events if isinstance(e, Finished))
    assert finished[b"growing"] == 1 and set(finished.values()) == {1}
    assert (dst / "growing").read_bytes() == (src / "growing").read_bytes()


def swallow_first_sigterm(ready) -> None:
    """Like a worker whose SIGTERM landed just before it blocked: only the next one counts."""
    received = 0

    def on_sigterm(signum, frame):
        nonlocal received
        received += 1
        if received > 1:
            raise SystemExit(0)
    signal.signal(signal.SIGTERM, on_sigterm)
    ready.set()
    while True:
        time.sleep(1)


def deaf_to_sigterm(ready) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    ready.set()
    while True:
        time.sleep(1)


@pytest.mark.parametrize("target, killed, exitcode", [(swallow_first_sigterm, False, 0),
                                                       (deaf_to_sigterm, True, -signal.SIGKILL)])
def test_stopping_workers_repeats_sigterm_then_kills(target, killed, exitcode):
    context = multiprocessing.get_context("fork")
    ready = context.Event()
    process = context.Process(target=target, args=(ready,))
    process.start()
    assert ready.wait(10)

    assert stop_processes([process], grace_s=2.0) is killed

    assert process.exitcode == exitcode


@pytest.mark.timeout(30)
def test_the_end_of_a_run_never_waits_on_a_manager_that_cannot_go(tmp_path):
    """After a big copy the kernel can take seconds to finish the manager's exit; a stopped
    manager (SIGSTOP: it cannot answer or exit) stands in for that here."""
    from mirror.model import Mode
    from mirror.options import Options
    from mirror.plan.tree import LocalTree
    from mirror.run.pool import PoolEngine
    from mirror.run.worker import WorkerSpec
    (tmp_path / "src").mkdir()
    engine = PoolEngine(WorkerSpec(LocalTree(os.fsencode(tmp_path / "src")), os.fsencode(tmp_path / "dst"),
                                   Mode.COPY, Options(jobs=1)))
    manager = engine.manager._process
    os.kill(manager.pid, signal.SIGSTOP)

    engine.close()  # multiprocessing's own manager shutdown would wait for an answer forever

    assert manager not in multiprocessing.active_children()  # nor is it joined at exit
    deadline = time.monotonic() + 10
    while os.path.exists(f"/proc/{manager.pid}"):  # killed, and reaped in the background
        assert time.monotonic() < deadline, "the stopped manager was not killed"
        time.sleep(0.05)


def test_a_manager_with_a_socket_file_is_shut_down_cleanly(make_tree, tmp_path):
    """Where abstract sockets do not exist (not Linux), the manager's socket lives in a folder
    of its own under TMPDIR, which only a clean shutdown removes."""
    src = make_tree({"a": b"1"})
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    script = ("import sys, mirror.run.pool as engine; engine.manager_address = lambda: None; "
              "from mirror import Options, copy_tree; "
              "sys.exit(copy_tree(sys.argv[1], sys.argv[2], Options(jobs=1)).exit_code)")
    done = subprocess.run([sys.executable, "-c", script, src, tmp_path / "dst"], timeout=60,
                          env={**os.environ, "TMPDIR": str(tmp)}, capture_output=True, text=True)

    assert done.returncode == 0, done.stderr
    assert (tmp_path / "dst" / "a").read_bytes() == b"1"
    assert os.listdir(tmp) == []


def test_a_helper_forked_before_its_own_handlers_exits_on_a_stop_signal():
    """A process the master forks runs the master's handlers until it sets its own; a stop
    signal then must end it, not be dropped because the master was already stopping (a Pool
    worker started during a stop once lived on, and the master waited for it forever)."""
    from mirror import errors
    previous = signal.signal(signal.SIGTERM, errors.raise_stop)
    errors.arm_stop_signals(False)  # the master is stopping: its own stop signals are dropped
    try:
        child = multiprocessing.get_context("fork").Process(
            target=lambda: (os.kill(os.getpid(), signal.SIGTERM), time.sleep(5)))
        child.start()
        child.join(10)
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert child.exitcode == 128 + signal.SIGTERM
