"""Entries that change under a run: vanished files, FIFOs in place of files, killed runs."""
from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import time

import pytest

from conftest import NOBODY, File, build, needs_root, run_as_nobody, run_mirror, snapshot, temp_files
from mirror import Options, copy_tree, sync_tree
from mirror.model import Action, Mode, Op, Reason, Status
from mirror.plan.scan import entry_from_stat
from mirror.events import Finished
from mirror.report import Report
from mirror.run.apply import Applier



def copy_action(src, name: bytes) -> Action:
    entry = entry_from_stat(name, os.lstat(os.path.join(os.fsencode(src), name)))
    return Action(Op.COPY, name, Reason.MISSING, entry)


def apply_one(src, dst, action: Action):
    applier = Applier(os.fsencode(src), os.fsencode(dst), Mode.COPY, Options(jobs=1))
    try:
        return applier.apply(action)
    finally:
        applier.close()


def test_a_file_that_vanished_after_the_walk_is_a_warning(make_tree):
    src = make_tree({"gone": b"soon"})
    dst = make_tree({})
    action = copy_action(src, b"gone")
    (src / "gone").unlink()

    outcome = apply_one(src, dst, action)
    report = Report(Mode.SYNC, 1, False)
    report.record(Finished.of(outcome))

    assert outcome.status is Status.VANISHED
    assert report.errors == [] and report.exit_code == 0
    assert report.warnings == ["gone: vanished before it was copied"]
    assert os.listdir(dst) == []


@pytest.mark.timeout(10)
def test_a_fifo_in_place_of_a_file_never_blocks(make_tree):
    src = make_tree({"f": b"regular at walk time"})
    dst = make_tree({})
    action = copy_action(src, b"f")
    (src / "f").unlink()
    os.mkfifo(src / "f")

    outcome = apply_one(src, dst, action)

    assert outcome.status is Status.FAILED
    assert "no longer a regular file" in outcome.error.strerror
    assert temp_files(dst) == []


def test_failed_destination_write_leaves_old_version_and_no_temp(make_tree):
    from conftest import file_size_limit
    src = make_tree({"f": b"n" * (2 << 20)})
    dst = make_tree({"f": b"old version"})

    with file_size_limit(1 << 20):
        report = copy_tree(src, dst, Options(jobs=2))

    assert report.files_failed == 1 and report.exit_code == 1
    assert (dst / "f").read_bytes() == b"old version"
    assert temp_files(dst) == []


def test_progress_off_a_terminal_is_plain_lines(make_tree, tmp_path):
    src = make_tree({"a": b"1" * 1000})

    result = run_mirror("copy", src, tmp_path / "dst", "--progress")

    assert result.returncode == 0
    assert "progress: " in result.stderr and "copied 1 of 1 files" in result.stderr
    assert "\r" not in result.stderr


@pytest.mark.parametrize("command", ["copy", "sync"])
def test_a_killed_run_leaves_no_lock_and_the_next_run_repairs(tmp_path, command):
    src = tmp_path / "src"
    src.mkdir()
    (src / "small").write_bytes(b"s")
    with open(src / "huge", "wb") as stream:
        stream.truncate(6 << 30)
    dst = tmp_path / "dst"
    process = subprocess.Popen([sys.executable, "-m", "mirror", command, str(src), str(dst), "--no-sparse"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 30
    while not (dst.exists() and temp_files(dst)) and time.monotonic() < deadline:
        time.sleep(0.01)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert temp_files(dst), "the kill left a temporary file behind"
    os.truncate(src / "huge", 1 << 20)  # keep the repair run short

    result = run_mirror(command, src, dst, "--json")

    assert result.returncode == 0, result.stderr
    assert temp_files(dst) == []
    assert snapshot(dst) == snapshot(src)


def copy_exit_code(src, dst) -> int:
    return copy_tree(src, dst).exit_code


def sync_exit_code(src, dst) -> int:
    return sync_tree(src, dst).exit_code


@needs_root
def test_without_root_a_read_only_folder_copied_earlier_still_takes_new_files(open_dir):
    base = open_dir
    dst = base / "dst"
    src = base / "src"
    build(src, {"ro/a": b"a"})
    os.chmod(src / "ro", 0o555)
    os.chown(base, NOBODY, NOBODY)
    assert run_as_nobody(copy_exit_code, src, dst) == 0
    assert stat.S_IMODE(os.stat(dst / "ro").st_mode) == 0o555
    (src / "ro" / "b").write_bytes(b"b")  # root may write into the 0555 folder

    assert run_as_nobody(copy_exit_code, src, dst) == 0

    assert (dst / "ro" / "b").read_bytes() == b"b"
    assert stat.S_IMODE(os.stat(dst / "ro").st_mode) == 0o555
    (src / "ro" / "a").unlink()
    assert run_as_nobody(sync_exit_code, src, dst) == 0  # deleting inside it works the same way
    assert sorted(os.listdir(dst / "ro")) == ["b"]
    assert stat.S_IMODE(os.stat(dst / "ro").st_mode) == 0o555


@needs_root
def test_without_root_a_refused_metadata_change_leaves_the_folder_read_only(open_dir):
    base = open_dir
    src, dst = base / "src", base / "dst"
    build(src, {"ro/f": File(b"same", mode=0o600, mtime_ns=10**18)})
    build(dst, {"ro/f": File(b"same", mode=0o644, mtime_ns=10**18)})  # only permissions differ
    for path in (base, dst, dst / "ro"):
        os.chown(path, NOBODY, NOBODY)  # DST's file stays root's: nobody may not chmod it
    for folder in (src / "ro", dst / "ro"):
        os.chmod(folder, 0o555)
        os.utime(folder, ns=(10**18, 10**18))  # equal: no folder metadata is planned

    assert run_as_nobody(copy_exit_code, src, dst) == 1

    assert stat.S_IMODE(os.stat(dst / "ro").st_mode) == 0o555  # not opened up for nothing
