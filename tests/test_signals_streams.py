"""Stop signals at any moment, hangups, and closed or full output streams, through the real command."""
from __future__ import annotations

import fcntl
import json
import os
import pty
import random
import select
import signal
import struct
import subprocess
import sys
import termios
import time

import pytest

from conftest import build, handlers_set, snapshot, temp_files

TREE = {f"d{i % 8}/f{i}": os.urandom(100 + i * 37 % 6000) for i in range(400)}
MANY_LINES = {f"d{i % 10}/f{i}": b"x" * (i % 50) for i in range(1500)}  # -v: ~50 KB of lines
GROUP = (signal.SIGINT, signal.SIGHUP)  # Ctrl-C and a hangup reach the process group, kill PID one


def command(*args) -> list[str]:
    return [sys.executable, "-m", "mirror", *map(os.fsdecode, args)]


def send(process: subprocess.Popen, signum: int) -> None:
    try:
        if signum in GROUP:
            os.killpg(process.pid, signum)
        else:
            process.send_signal(signum)
    except ProcessLookupError:
        pass  # it finished first


def left_behind(marker: str) -> list[int]:
    """Processes (not zombies) whose command line holds `marker`: a run's master and helpers."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as cmdline, open(f"/proc/{pid}/stat") as stat:
                if marker.encode() in cmdline.read() and stat.read().rsplit(")", 1)[1].split()[0] != "Z":
                    found.append(int(pid))
        except OSError:
            pass
    return found


def assert_nothing_left(*dsts) -> None:
    deadline = time.monotonic() + 10  # a helper dies with its master (PR_SET_PDEATHSIG): soon after
    while any(left_behind(str(dst)) for dst in dsts):
        assert time.monotonic() < deadline, [left_behind(str(dst)) for dst in dsts]
        time.sleep(0.05)
    for dst in dsts:
        assert temp_files(dst) == [], dst


def assert_stopped_cleanly(returncode: int, stdout: str, stderr: str, signum: int) -> None:
    """Exit 128+signum with the summary and the JSON line, or 0 if the run finished first."""
    assert returncode in (0, 128 + signum), (returncode, stderr)
    assert "Traceback" not in stderr and "Exception ignored" not in stderr, stderr
    summary = json.loads(stdout.splitlines()[-1])
    assert summary["interrupted"] is (returncode != 0)
    assert summary["exit_code"] == returncode  # the JSON says what the process exits with
    if returncode:
        assert "Interrupted: the run is incomplete." in stderr


@pytest.mark.timeout(120)
def test_a_stop_signal_at_any_moment_of_the_first_half_second_ends_the_run_cleanly(tmp_path):
    """From mirror's first instruction on (its handlers are set then: before, Python itself is
    starting), through imports, argument parsing, the checks, the lock and the pool's start."""
    src = build(tmp_path / "src", TREE)
    rng = random.Random(7)
    outcomes = []
    unseen = 0  # runs that ended before a poll saw their handlers (a very busy machine)
    for first in range(0, 40, 4):  # four runs at a time
        runs = []
        for number in range(first, first + 4):
            dst = tmp_path / f"dst{number}"
            process = subprocess.Popen(command(rng.choice(["copy", "sync"]), "--json", "-j", "2", src, dst),
                                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                       start_new_session=True)
            runs.append([process, dst, rng.choice([signal.SIGINT, signal.SIGTERM, signal.SIGHUP]),
                         rng.uniform(0, 0.5), None])
        deadline = time.monotonic() + 30
        while any(run[4] is None for run in runs):
            for run in runs:
                if run[4] is None and handlers_set(run[0].pid):
                    run[4] = time.monotonic() + run[3]
                elif run[4] is None and run[0].poll() is not None:
                    run[4] = time.monotonic()
                    unseen += 1
            assert time.monotonic() < deadline, "a run never started"
            time.sleep(0.001)
        for process, dst, signum, delay, when in sorted(runs, key=lambda run: run[4]):
            time.sleep(max(0.0, when - time.monotonic()))
            send(process, signum)
        for process, dst, signum, delay, when in runs:
            stdout, stderr = process.communicate(timeout=60)
            assert_stopped_cleanly(process.returncode, stdout, stderr, signum)
            outcomes.append(process.returncode)
        assert_nothing_left(*(run[1] for run in runs))
    assert unseen <= 4, f"{unseen} runs set no handler for SIGTERM and SIGHUP at start-up"
    assert sum(1 for code in outcomes if code) >= 10, outcomes  # most signals came in time


HOOKED = """
import os, runpy, sys, time
notify = int(sys.argv.pop(1))
{hook}
runpy.run_module("mirror", run_name="__main__", alter_sys=True)
"""

SLOW_IMPORT = """
class Slow:
    def find_spec(self, name, path=None, target=None):
        if name == {module!r}:
            sys.meta_path.remove(self)
            os.write(notify, b"!")
            time.sleep(20)
sys.meta_path.insert(0, Slow())
"""

# The pool's first worker is forked, and the master pauses before it forks the next.
SLOW_POOL = """
import multiprocessing.pool
real = multiprocessing.pool.Pool.Process
def process(ctx, *args, **kwargs):
    worker = real(ctx, *args, **kwargs)
    start = worker.start
    def paused_start():
        start()
        if not process.done:
            process.done = True
            os.write(notify, b"!")
            time.sleep(0.5)
    worker.start = paused_start
    return worker
process.done = False
multiprocessing.pool.Pool.Process = staticmethod(process)
"""


def run_hooked(hook: str, signum: int, *args) -> subprocess.CompletedProcess:
    """The command with `hook` run first; `signum` is sent when the hook says so."""
    reader, writer = os.pipe()
    try:
        process = subprocess.Popen([sys.executable, "-c", HOOKED.format(hook=hook), str(writer),
                                    *map(os.fsdecode, args)], pass_fds=(writer,), stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True, start_new_session=True)
        os.close(writer)
        ready, _, _ = select.select([reader], [], [], 60)
        assert ready and os.read(reader, 1) == b"!", "the hook never ran"
    finally:
        os.close(reader)
    send(process, signum)
    stdout, stderr = process.communicate(timeout=60)
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


@pytest.mark.parametrize("module", ["typer", "multiprocessing.pool"])
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_stop_signal_while_a_library_is_imported(tmp_path, module, signum):
    src = build(tmp_path / "src", {"a": b"1"})
    dst = tmp_path / "dst"

    done = run_hooked(SLOW_IMPORT.format(module=module), signum, "copy", "--json", src, dst)

    assert done.returncode == 128 + signum, done.stderr
    assert_stopped_cleanly(done.returncode, done.stdout, done.stderr, signum)
    assert_nothing_left(dst)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
def test_a_stop_signal_while_the_pool_starts(tmp_path, signum):
    """Workers forked but not yet set up, and more to come: all are stopped, none is left."""
    src = build(tmp_path / "src", TREE)
    dst = tmp_path / "dst"
    log = tmp_path / "log"

    done = run_hooked(SLOW_POOL, signum, "sync", "--json", "-j", "3", "--log-file", log, src, dst)

    assert done.returncode == 128 + signum, done.stderr
    assert_stopped_cleanly(done.returncode, done.stdout, done.stderr, signum)
    assert f"interrupted by {signal.Signals(signum).name}" in log.read_text()
    assert_nothing_left(dst)


def sparse_source(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    with open(src / "huge", "wb") as stream:  # sparse: cheap to make, slow to copy with --no-sparse
        stream.truncate(6 << 30)
    return src


def test_a_hangup_stops_the_run_cleanly_with_129(tmp_path):
    src = sparse_source(tmp_path)
    dst = tmp_path / "dst"
    log = tmp_path / "log"
    process = subprocess.Popen(command("copy", "-j", "2", "--no-sparse", "--log-file", log, src, dst),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               start_new_session=True)
    deadline = time.monotonic() + 30
    while not (dst.exists() and temp_files(dst)):
        assert time.monotonic() < deadline, "the copy never started"
        time.sleep(0.01)

    os.killpg(process.pid, signal.SIGHUP)  # as a closed terminal does: the workers get it too
    stdout, stderr = process.communicate(timeout=60)

    assert process.returncode == 129, stderr
    assert "Interrupted: the run is incomplete." in stderr and "Traceback" not in stderr
    assert "interrupted by SIGHUP" in log.read_text()
    assert log.read_text().splitlines()[-1].split(" ", 2)[2].startswith("end: exit 129: Copied 0 files")
    assert not (dst / "huge").exists()
    assert_nothing_left(dst)


def test_under_nohup_a_hangup_changes_nothing(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    with open(src / "big", "wb") as stream:  # above 16 MiB: written under a temporary name
        stream.truncate(256 << 20)
    dst = tmp_path / "dst"
    process = subprocess.Popen(command("copy", "-j", "2", "--no-sparse", src, dst), stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, start_new_session=True,
                               preexec_fn=lambda: signal.signal(signal.SIGHUP, signal.SIG_IGN))
    deadline = time.monotonic() + 30
    while not (dst.exists() and temp_files(dst)):
        assert time.monotonic() < deadline, "the copy never started"
        time.sleep(0.01)

    os.killpg(process.pid, signal.SIGHUP)
    stdout, stderr = process.communicate(timeout=60)

    assert process.returncode == 0, stderr
    assert snapshot(dst) == snapshot(src)


def test_verbose_output_into_a_reader_that_stops_after_two_lines(tmp_path):
    """`mirror copy -v SRC DST | head -2`: the copy goes on to the end."""
    src = build(tmp_path / "src", MANY_LINES)
    dst = tmp_path / "dst"
    log = tmp_path / "log"
    process = subprocess.Popen(command("copy", "-v", "--log-file", log, src, dst),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines = [process.stdout.readline() for _ in range(2)]
    process.stdout.close()
    process.stdout = None  # communicate() then reads stderr alone
    _, stderr = process.communicate(timeout=60)

    assert all(line.startswith(("copy ", "mkdir ")) for line in lines), lines
    assert process.returncode == 0, stderr
    assert "Traceback" not in stderr and "Exception ignored" not in stderr, stderr
    assert "Copied 1,500 files" in stderr
    assert snapshot(dst) == snapshot(src)
    assert "stdout closed: output stopped" in log.read_text()


def test_a_closed_stderr_stops_nothing(tmp_path):
    src = build(tmp_path / "src", MANY_LINES)
    dst = tmp_path / "dst"
    log = tmp_path / "log"

    done = subprocess.run(command("sync", "--progress", "--json", "--log-file", log, src, dst),
                          capture_output=False, stdout=subprocess.PIPE, text=True, timeout=60,
                          preexec_fn=lambda: os.close(2))  # 2>&-

    assert done.returncode == 0
    assert json.loads(done.stdout.splitlines()[-1])["files_copied"] == 1500
    assert snapshot(dst) == snapshot(src)
    assert "stderr closed: output stopped" in log.read_text()


def test_a_progress_bar_on_a_terminal_that_goes_away(tmp_path):
    """The bar (tqdm) writes to a terminal whose other end is closed (ssh dropped): EIO."""
    src = build(tmp_path / "src", MANY_LINES)
    dst = tmp_path / "dst"
    log = tmp_path / "log"
    terminal, bar = pty.openpty()
    fcntl.ioctl(bar, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))  # or it draws nothing
    try:
        process = subprocess.Popen(command("copy", "--json", "--log-file", log, src, dst),
                                   stdout=subprocess.PIPE, stderr=bar, text=True, start_new_session=True)
    finally:
        os.close(bar)
    try:
        ready, _, _ = select.select([terminal], [], [], 60)
        assert ready and os.read(terminal, 1024), "the bar was never drawn"
    finally:
        os.close(terminal)
    stdout, _ = process.communicate(timeout=60)

    assert process.returncode == 0
    assert json.loads(stdout.splitlines()[-1])["files_copied"] == 1500
    assert snapshot(dst) == snapshot(src)
    assert "stderr failed (Input/output error (EIO)): output stopped" in log.read_text()


def test_stdout_on_a_full_disk(tmp_path):
    src = build(tmp_path / "src", MANY_LINES)
    dst = tmp_path / "dst"
    log = tmp_path / "log"
    with open("/dev/full", "w") as full:
        done = subprocess.run(command("copy", "-v", "--json", "--log-file", log, src, dst), stdout=full,
                              stderr=subprocess.PIPE, text=True, timeout=60)

    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr and "Exception ignored" not in done.stderr, done.stderr
    assert "Copied 1,500 files" in done.stderr
    assert snapshot(dst) == snapshot(src)
    assert "stdout failed (No space left on device (ENOSPC)): output stopped" in log.read_text()
