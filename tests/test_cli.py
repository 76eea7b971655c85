"""The command line as users and scripts meet it: output, --json, logs, and every exit code."""
from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import sys
import time

import pytest
from typer.testing import CliRunner

from conftest import build, needs_root, run_as_nobody, run_mirror, snapshot, temp_files
from mirror.ui.cli import app

JSON_KEYS = {"files_copied", "files_skipped", "files_failed", "bytes_copied", "dirs_created",
             "links_created", "deleted", "errors", "warnings", "elapsed_s", "jobs", "dry_run"}


def last_json(stdout: str) -> dict:
    return json.loads(stdout.strip().splitlines()[-1])


def test_copy_prints_a_summary(cli, make_tree, tmp_path):
    src = make_tree({"a/b.txt": b"hi"})

    result = cli("copy", src, tmp_path / "dst", "--no-progress")

    assert result.exit_code == 0, result.output
    assert "Copied 1 file" in result.output
    assert snapshot(tmp_path / "dst") == snapshot(src)


def test_json_is_the_last_stdout_line_even_when_quiet(cli, make_tree, tmp_path):
    src = make_tree({"a": b"1", "b": b"22"})

    result = cli("sync", src, tmp_path / "dst", "--json", "--quiet", "-j", "2")

    summary = last_json(result.stdout)
    assert JSON_KEYS <= summary.keys()
    assert (summary["files_copied"], summary["bytes_copied"], summary["jobs"]) == (2, 3, 2)
    assert summary["dry_run"] is False and summary["errors"] == []


def test_quiet_prints_nothing_on_success(make_tree, tmp_path):
    src = make_tree({"a": b"1"})

    result = run_mirror("copy", src, tmp_path / "dst", "-q")

    assert result.returncode == 0
    assert result.stdout == "" and result.stderr == ""


def test_verbose_dry_run_gives_each_action_and_reason(cli, make_tree):
    src = make_tree({"new": b"n", "changed": b"newer"})
    dst = make_tree({"changed": b"old", "extra": b"x"})

    result = cli("sync", src, dst, "-n", "-v")

    assert result.exit_code == 0
    assert "copy     new  (missing)" in result.stdout
    assert "copy     changed  (size differs)" in result.stdout
    assert "delete   extra  (not in source)" in result.stdout
    assert (dst / "extra").exists()


def test_check_lists_differences_and_exits_1(cli, make_tree, tmp_path):
    src = make_tree({"a": b"1"})
    dst = make_tree({"b": b"2"})

    result = cli("check", src, dst)

    assert result.exit_code == 1
    assert "+ a" in result.stdout and "- b" in result.stdout


def test_log_file_appends_actions_and_summary(cli, make_tree, tmp_path):
    src = make_tree({"a": b"1"})
    log = tmp_path / "mirror.log"
    log.write_text("earlier line\n")

    cli("copy", src, tmp_path / "dst", "-q", "--log-file", log)
    cli("copy", src, tmp_path / "dst", "-q", "--log-file", log)

    text = log.read_text()
    assert text.startswith("earlier line\n")
    assert "copy     a  (missing)" in text
    assert text.count("start: copy ") == 2 and "(jobs " in text  # the options in effect
    assert text.count("end: exit 0: Copied") == 2
    assert text.splitlines()[-1].split(" ", 2)[2].startswith("end: exit 0: ")  # the last line


def test_exclude_from_file(cli, make_tree, tmp_path):
    src = make_tree({"a.txt": b"1", "b.log": b"2"})
    patterns = tmp_path / "patterns"
    patterns.write_text("# logs are local\n*.log\n")

    result = cli("copy", src, tmp_path / "dst", "--exclude-from", patterns)

    assert result.exit_code == 0
    assert sorted(os.listdir(tmp_path / "dst")) == ["a.txt"]


@pytest.mark.parametrize("args, message", [
    (["copy", "{missing}", "{dst}"], "No such file"),
    (["copy", "{file}", "{missing}/file"], "No such file"),
    (["copy", "{src}", "{file}"], "is not a folder"),
    (["copy", "{src}", "{src}"], "same folder"),
    (["sync", "{src}", "{src}/inner"], "inside the source"),
    (["sync", "{src}/sub", "{src}"], "inside the destination"),
    (["copy", "-j", "0", "{src}", "{dst}"], "--jobs"),
    (["copy", "--exclude-from", "{missing}", "{src}", "{dst}"], "cannot read --exclude-from"),
    (["sync", "--max-delete", "-1", "{src}", "{dst}"], "--max-delete"),
])
def test_bad_input_exits_2_with_one_line_and_changes_nothing(make_tree, tmp_path, args, message):
    src = make_tree({"sub/f": b"x"})
    (tmp_path / "file").write_bytes(b"f")
    names = {"missing": tmp_path / "missing", "file": tmp_path / "file", "src": src, "dst": tmp_path / "dst"}

    result = run_mirror(*[arg.format(**names) for arg in args])

    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "dst").exists() and not (src / "inner").exists()


def test_exit_0_and_1_from_a_real_process(make_tree, tmp_path):
    src = make_tree({"x": b"file where DST has a non-empty folder", "ok": b"fine"})
    dst = make_tree({"x/keep": b"k"})

    assert run_mirror("copy", src, tmp_path / "fresh").returncode == 0
    failed = run_mirror("copy", src, dst, "--json")
    assert failed.returncode == 1
    summary = last_json(failed.stdout)
    assert summary["files_failed"] == 1 and summary["errors"][0]["path"] == "x"
    assert "x" in failed.stderr and "non-empty folder" in failed.stderr


def test_exit_3_while_another_run_holds_the_lock(make_tree, tmp_path):
    src = make_tree({"a": b"1"})
    dst = tmp_path / "dst"
    dst.mkdir()
    fd = os.open(dst, os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        result = run_mirror("copy", src, dst)
    finally:
        os.close(fd)

    assert result.returncode == 3
    assert "another mirror run" in result.stderr
    assert os.listdir(dst) == []
    assert run_mirror("copy", src, dst).returncode == 0, "the lock is gone with its holder"


def mirror_processes(marker: str) -> list[int]:
    pids = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as stream:
                if marker.encode() in stream.read():
                    pids.append(int(pid))
        except OSError:
            pass
    return pids


@pytest.mark.parametrize("signum, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signals_stop_cleanly(tmp_path, signum, code):
    src = tmp_path / "src"
    src.mkdir()
    with open(src / "huge", "wb") as stream:  # sparse: cheap to make, slow to copy with --no-sparse
        stream.truncate(6 << 30)
    dst = tmp_path / f"dst-{signum}"
    process = subprocess.Popen([sys.executable, "-m", "mirror", "copy", str(src), str(dst), "-j", "2",
                                "--no-sparse"],  # every byte written: slow
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               start_new_session=True)
    deadline = time.monotonic() + 30
    while not (dst.exists() and temp_files(dst)) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert temp_files(dst), "the copy started"
    if signum == signal.SIGINT:
        os.killpg(process.pid, signum)   # Ctrl-C reaches the whole process group
    else:
        process.send_signal(signum)      # kill PID reaches the master only
    stdout, stderr = process.communicate(timeout=30)

    assert process.returncode == code, stderr
    assert "Interrupted" in stderr
    assert "Traceback" not in stderr
    assert temp_files(dst) == []
    assert not (dst / "huge").exists()
    time.sleep(0.2)
    assert mirror_processes(str(dst)) == []


def test_sync_from_an_empty_source_is_refused_unless_allowed(make_tree, tmp_path):
    empty = tmp_path / "unmounted"
    empty.mkdir()
    dst = make_tree({"precious/data": b"d"})

    refused = run_mirror("sync", empty, dst)
    assert refused.returncode == 2 and "--allow-empty-src" in refused.stderr
    assert (dst / "precious/data").exists()

    allowed = run_mirror("sync", empty, dst, "--allow-empty-src")
    assert allowed.returncode == 0 and os.listdir(dst) == []


def copy_through_the_cli(src, dst) -> int:
    """The CLI in this process; its exit code, or 99 if it did not say why."""
    result = CliRunner().invoke(app, ["copy", str(src), str(dst)])
    return result.exit_code if "permission denied" in result.output.lower() else 99


@needs_root
def test_unreadable_source_exits_2(make_tree, open_dir):
    src = open_dir / "src"
    build(src, {"a": b"1"})
    os.chmod(src, 0)

    assert run_as_nobody(copy_through_the_cli, src, open_dir / "dst") == 2

    assert not (open_dir / "dst").exists()
