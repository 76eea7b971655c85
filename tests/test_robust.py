"""Real conditions through the real command: trees that change mid-run, odd locales, no root, full disks."""
from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from conftest import (NOBODY, Link, build, needs_root, run_as_nobody, run_mirror, snapshot, temp_files,
                      wait_for_handlers)
from mirror.ui.cli import app


def summary(result) -> dict:
    return json.loads(result.stdout.strip().splitlines()[-1])


# A run in which the tree changes right after a folder is listed: `change` runs in whichever
# process lists the folder (the master's workers are forked from it, so they have it too).
AFTER_LISTING = """
import os, sys
from mirror.plan import march
root, name, change = os.fsencode(sys.argv.pop(1)), os.fsencode(sys.argv.pop(1)), sys.argv.pop(1)
real = march.Planner.listings
def listed(self, rel, *args):
    listing = real(self, rel, *args)  # (unchanged, SRC's listing, DST's)
    path = os.path.join(root, name)
    if self.src.path == root and rel == b"" and name in listing[1] and os.path.lexists(path):
        os.unlink(path)
        if change == "file":
            open(path, "wb").write(b"a file now")
    return listing
march.Planner.listings = listed
sys.argv[0] = "mirror"
from mirror.ui.cli import main
main()
"""


def run_changing(root, name: str, change: str, *args) -> subprocess.CompletedProcess:
    command = [sys.executable, "-c", AFTER_LISTING, os.fsdecode(root), name, change, *map(os.fsdecode, args)]
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


def many_files(count: int = 200) -> dict:
    return {f"sub/f{number}": b"x" * number for number in range(count)}


def test_a_source_symlink_that_vanishes_after_its_listing_is_a_warning(tmp_path):
    src = build(tmp_path / "src", {**many_files(), "zzz": Link("target")})
    dst = tmp_path / "dst"

    result = run_changing(src, "zzz", "gone", "copy", src, dst, "--json")

    assert result.returncode == 0, result.stderr
    assert "zzz: vanished before it was copied" in result.stderr and "Traceback" not in result.stderr
    assert summary(result)["files_copied"] == 200 and not os.path.lexists(dst / "zzz")


def test_a_source_symlink_replaced_by_a_file_after_its_listing_is_listed_again(tmp_path):
    src = build(tmp_path / "src", {**many_files(), "zzz": Link("target")})
    dst = tmp_path / "dst"

    result = run_changing(src, "zzz", "file", "copy", src, dst, "--json")

    assert result.returncode == 0, result.stderr
    assert (dst / "zzz").read_bytes() == b"a file now" and summary(result)["files_copied"] == 201


def test_a_destination_only_symlink_removed_mid_sync_is_no_error(tmp_path):
    src = build(tmp_path / "src", many_files())
    dst = build(tmp_path / "dst", {"zzz": Link("target"), "old": b"extra"})

    result = run_changing(dst, "zzz", "gone", "sync", src, dst, "--json")

    assert result.returncode == 0, result.stderr
    assert sorted(os.listdir(dst)) == [b"sub"]


LATIN_1 = "en_US.ISO-8859-1"


@pytest.fixture(scope="module")
def latin1_locale(tmp_path_factory):
    """A Latin-1 locale compiled into a private folder (LOCPATH): nothing on the system changes."""
    localedef = shutil.which("localedef")
    if localedef is None:
        pytest.skip("localedef is not installed (Debian's libc-bin): no Latin-1 locale to test with")
    folder = tmp_path_factory.mktemp("locales")
    made = subprocess.run([localedef, "-i", "en_US", "-f", "ISO-8859-1", folder / LATIN_1], capture_output=True)
    if made.returncode not in (0, 1) or not (folder / LATIN_1).exists():  # 1: warnings only
        pytest.skip(f"localedef could not build {LATIN_1}: {made.stderr.decode(errors='replace')}")
    return {**os.environ, "LOCPATH": str(folder), "LC_ALL": LATIN_1}


@pytest.mark.parametrize("locale", ["latin-1", "C"])
def test_names_are_bytes_under_any_locale(tmp_path, latin1_locale, locale):
    env = latin1_locale if locale == "latin-1" else {**os.environ, "LC_ALL": "C"}
    if locale == "latin-1":
        check = subprocess.run([sys.executable, "-c", "import sys; print(sys.getfilesystemencoding())"],
                               env=env, capture_output=True, text=True)
        assert check.stdout.strip() == "iso8859-1"
    names = {b"caf\xe9.txt": b"latin-1 name", "d\u00e9j\u00e0/caf\u00e9".encode(): b"utf-8 names",
             b"d\xe9j\xe0/x": b"in a latin-1 folder", b"plain": b"p"}
    src = build(tmp_path / "src", names)
    dst = tmp_path / "dst"

    result = run_mirror("sync", src, dst, "--json", env=env)

    assert result.returncode == 0, result.stderr
    assert summary(result)["files_copied"] == 4 and summary(result)["warnings"] == []
    assert snapshot(dst) == snapshot(src)
    assert run_mirror("check", src, dst, env=env).returncode == 0


def cli_exit_code(*args) -> int:
    """The command line in this (forked) process, as `nobody`: its exit code."""
    return CliRunner().invoke(app, [os.fsdecode(arg) for arg in args]).exit_code


@needs_root
def test_without_root_a_read_only_source_root_syncs_again_and_again(open_dir):
    src, dst = open_dir / "src", open_dir / "dst"
    build(src, {"a": b"a", "sub/b": b"b"})
    os.chmod(src, 0o555)
    os.chown(open_dir, NOBODY, NOBODY)

    assert run_as_nobody(cli_exit_code, "sync", src, dst) == 0
    assert stat.S_IMODE(os.stat(dst).st_mode) == 0o555
    (src / "new").write_bytes(b"n")  # root may write into the 0555 folder
    (src / "a").unlink()

    assert run_as_nobody(cli_exit_code, "sync", src, dst) == 0

    assert sorted(os.listdir(dst)) == ["new", "sub"] and stat.S_IMODE(os.stat(dst).st_mode) == 0o555


@needs_root
def test_without_root_a_read_only_folder_that_became_a_file_is_replaced(open_dir):
    src, dst = open_dir / "src", open_dir / "dst"
    build(src, {"sub/a": b"a", "sub/inner/b": b"b"})
    for folder in (src / "sub/inner", src / "sub"):
        os.chmod(folder, 0o555)
    os.chown(open_dir, NOBODY, NOBODY)
    assert run_as_nobody(cli_exit_code, "sync", src, dst) == 0
    for folder in (src / "sub/inner", src / "sub"):
        os.chmod(folder, 0o755)
    shutil.rmtree(src / "sub")
    (src / "sub").write_bytes(b"a file now")

    assert run_as_nobody(cli_exit_code, "sync", src, dst) == 0

    assert (dst / "sub").read_bytes() == b"a file now"


@needs_root
def test_without_root_errors_that_cannot_change_are_not_retried(open_dir):
    src, dst = open_dir / "src", open_dir / "dst"
    build(src, {"secret": b"s", "fine": b"f"})
    os.chmod(src / "secret", 0o600)  # root's: nobody cannot read it
    os.chown(open_dir, NOBODY, NOBODY)
    out = open_dir / "summary.json"
    out.write_text("")
    os.chown(out, NOBODY, NOBODY)

    def copy_json() -> int:
        result = CliRunner().invoke(app, ["copy", os.fsdecode(src), os.fsdecode(dst), "--json"])
        out.write_text(result.stdout.strip().splitlines()[-1])
        return result.exit_code

    assert run_as_nobody(copy_json) == 1

    report = json.loads(out.read_text())
    assert report["retried"] == 0 and report["files_copied"] == 1
    assert report["elapsed_s"] < 0.7, "no pause before a retry that cannot help"  # 0.25 + 0.5 before


@needs_root
def test_a_full_disk_is_one_error_and_one_counted_line(tmp_path):
    disk = tmp_path / "disk"
    disk.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", disk], check=True)
    try:
        src = build(tmp_path / "src", {f"d{folder}/f{number}": b"x" * 20_000
                                        for folder in range(4) for number in range(40)})
        dst = build(disk / "dst", {"d0/f0": b"old version"})

        result = run_mirror("copy", src, dst, "--json", "-j", "2")

        assert result.returncode == 1
        errors = summary(result)["errors"]
        assert "No space left on device" in errors[0]["error"]
        assert len(errors) == 2 and errors[1]["path"] is None
        assert errors[1]["error"].endswith("not written: No space left on device (ENOSPC)")
        assert result.stderr.count("No space left on device") == 2
        assert Path(os.fsdecode(dst + b"/d0/f0")).read_bytes() in (b"old version", b"x" * 20_000)
        assert temp_files(dst) == []
    finally:
        subprocess.run(["umount", "-l", disk], check=False)


def test_a_dry_run_predicts_that_copy_cannot_replace_a_non_empty_folder(tmp_path):
    src = build(tmp_path / "src", {"x": b"a file where DST has a folder", "ok": b"fine"})
    dst = build(tmp_path / "dst", {"x/keep": b"k"})

    dry = run_mirror("copy", "-n", src, dst, "--json")
    real = run_mirror("copy", src, dst, "--json")

    assert dry.returncode == real.returncode == 1
    assert summary(dry)["errors"] == summary(real)["errors"]
    assert summary(dry)["files_failed"] == summary(real)["files_failed"] == 1


def test_a_second_run_with_hard_links_changes_nothing(tmp_path):
    src = build(tmp_path / "src", {"a/one": b"linked", "b/plain": b"p"})
    os.link(src + b"/a/one", src + b"/a/two")
    dst = tmp_path / "dst"
    assert run_mirror("sync", "-H", src, dst).returncode == 0
    before = {path: os.lstat(os.path.join(os.fsencode(dst), path)).st_ctime_ns
              for path in snapshot(dst) if path != b"."}

    assert run_mirror("sync", "-H", src, dst).returncode == 0

    after = {path: os.lstat(os.path.join(os.fsencode(dst), path)).st_ctime_ns for path in before}
    assert after == before, "no chmod, chown or utime on a second run (each moves ctime)"


@pytest.mark.parametrize("signum, delay", [(15, 0.1), (2, 0.15), (15, 0.2), (1, 0.25)])
def test_a_stopped_run_counts_and_logs_every_entry_it_put_in_place(tmp_path, signum, delay):
    import time
    src = build(tmp_path / "src", {f"d{folder}/f{number}": b"x" * 3000
                                   for folder in range(20) for number in range(150)})
    dst, log = tmp_path / "dst", tmp_path / "log"
    process = subprocess.Popen([sys.executable, "-m", "mirror", "copy", os.fsdecode(src), dst, "--json",
                                "--log-file", log], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for_handlers(process.pid)
    time.sleep(delay)
    process.send_signal(signum)
    try:
        out, err = process.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()  # never left running: a hung run fails the test and goes
        raise

    placed = [path for path, facts in snapshot(dst).items() if facts[0] == stat.S_IFREG] if dst.exists() else []
    assert process.returncode in (0, 128 + signum), err
    report = json.loads(out.strip().splitlines()[-1])
    assert report["files_copied"] == len(placed)
    assert sum("] copy " in line for line in log.read_text().splitlines()) == len(placed)
    assert temp_files(dst) == [] if dst.exists() else True


def test_verbose_says_why_an_entry_is_tried_again(make_tree, monkeypatch, cli, pure_copy):
    from mirror.plan import tree
    src = make_tree({"growing": b"g" * 12345, "calm": b"c"})
    dst = make_tree({})
    real_unchanged = tree.unchanged
    monkeypatch.setattr(tree, "unchanged", lambda before, after: (
        before.size != 12345 and real_unchanged(before, after)))  # "growing" changes at every read

    result = cli("copy", "-v", "--retries", "1", "-j", "1", src, dst)

    assert result.exit_code == 1
    assert "retry    growing: changed while it was copied (EAGAIN)" in result.output
    assert "retry    calm" not in result.output


def test_a_stop_that_python_swallowed_still_stops_the_run(make_tree):
    """A stop signal raised inside a weakref callback or a finalizer is printed and dropped by
    Python ("Exception ignored"); the runner sees it between reports and stops all the same."""
    import gc
    import weakref

    from mirror import Options, copy_tree, errors
    src = make_tree({f"d{i}/f": b"x" for i in range(20)})

    class Doomed:
        pass
    errors.arm_stop_signals(True)
    doomed = Doomed()
    keep = weakref.ref(doomed, lambda ref: errors.raise_stop(15, None))
    hooked, sys.unraisablehook = sys.unraisablehook, lambda unraisable: None
    try:
        del doomed
        gc.collect()  # the callback ran: its Terminated was dropped
        with pytest.raises(errors.Interrupted) as stopped:
            copy_tree(src, make_tree({}), Options(jobs=2))
    finally:
        sys.unraisablehook = hooked
        errors.arm_stop_signals(False)
    assert keep() is None and stopped.value.signum == 15 and stopped.value.report.interrupted
