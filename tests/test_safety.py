"""What the README promises against data loss, through the real command: deletions, temp files, links."""
from __future__ import annotations

import json
import os
import random
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import Fifo, File, Link, build, needs_root, run_mirror, snapshot, temp_files

needs_rsync = pytest.mark.skipif(shutil.which("rsync") is None,
                                 reason="rsync is not installed (.ci/run installs it with apt-get)")


def summary(result: subprocess.CompletedProcess) -> dict:
    return json.loads(result.stdout.strip().splitlines()[-1])


# A run whose workers swap DST's entry for a symlink to a file outside DST just before its
# metadata is set: the race between the listing and the change, made certain.
RACE = """
import os, sys
from mirror.run import apply
outside, real = sys.argv.pop(1), apply.Applier.set_meta_by_name
def swapped(self, dir_fd, name, src):
    os.unlink(name, dir_fd=dir_fd)
    os.symlink(outside, name, dir_fd=dir_fd)
    return real(self, dir_fd, name, src)
apply.Applier.set_meta_by_name = swapped
sys.argv[0] = "mirror"
from mirror.ui.cli import main
main()
"""


def run_racing(outside, *args) -> subprocess.CompletedProcess:
    command = [sys.executable, "-c", RACE, os.fsdecode(outside), *map(os.fsdecode, args)]
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("what", ["chmod", "chown", "utime"])
def test_metadata_is_never_set_through_a_symlink_swapped_in_after_the_listing(tmp_path, what):
    outside = tmp_path / "outside"
    outside.write_bytes(b"not mirror's")
    os.chmod(outside, 0o600)
    os.utime(outside, ns=(10**18, 10**18))
    before = os.stat(outside)
    mtime = 1_600_000_000 * 10**9
    if what == "utime":  # a FIFO whose mtime differs gets only its times set
        src = build(tmp_path / "src", {"zzz": Fifo()})
        dst = build(tmp_path / "dst", {"zzz": Fifo()})
        os.utime(src + b"/zzz", ns=(mtime, mtime))
    else:  # a file equal in size and mtime whose permissions (or owner) differ
        src = build(tmp_path / "src", {"zzz": File(b"same", mode=0o666 if what == "chmod" else 0o600,
                                                   mtime_ns=mtime)})
        dst = build(tmp_path / "dst", {"zzz": File(b"same", mode=0o600, mtime_ns=mtime)})
        if what == "chown":
            if os.geteuid() != 0:
                pytest.skip("owners are kept only as root")
            os.chown(src + b"/zzz", 1234, 1234)
            os.utime(src + b"/zzz", ns=(mtime, mtime))

    result = run_racing(outside, "sync", src, dst, "--json")

    after = os.stat(outside)
    assert (stat.S_IMODE(after.st_mode), after.st_uid, after.st_gid, after.st_mtime_ns) == (
        0o600, before.st_uid, before.st_gid, before.st_mtime_ns), result.stderr
    assert result.returncode == 1 and "zzz" in result.stderr
    assert summary(result)["metadata_updated"] == 0


@pytest.mark.parametrize("args, message", [
    (["sync", "{src}", ""], "empty destination argument"),
    (["copy", "{src}", ""], "empty destination argument"),
    (["copy", "", "{dst}"], "empty source argument"),
    (["check", "{src}", ""], "empty destination argument"),
])
def test_an_empty_argument_is_refused_before_anything_is_touched(tmp_path, args, message):
    here = build(tmp_path / "here", {"precious.txt": b"keep me", "sub/deep": b"me too"})
    src = build(tmp_path / "src", {"a": b"a"})
    before = snapshot(here)

    result = run_mirror(*[arg.format(src=os.fsdecode(src), dst=tmp_path / "dst") for arg in args],
                        cwd=here)

    assert result.returncode == 2
    assert result.stderr == f"mirror: error: {message}\n"
    assert snapshot(here) == before and not (tmp_path / "dst").exists()


def test_sync_keeps_excluded_entries_and_the_folders_holding_them(tmp_path):
    src = build(tmp_path / "src", {"kept.c": b"c"})
    dst = build(tmp_path / "dst", {"gone/cache.o": b"excluded", "gone/old.c": b"extra",
                                   "gone/sub/more.o": b"excluded", "gone/empty/x.c": b"extra",
                                   "top.o": b"excluded", "other/a.c": b"extra"})

    result = run_mirror("sync", src, dst, "--exclude", "*.o", "--json")

    assert result.returncode == 0, result.stderr
    left = sorted(os.fsdecode(path) for path in snapshot(dst, mtimes=False))
    assert left == [".", "gone", "gone/cache.o", "gone/sub", "gone/sub/more.o", "kept.c", "top.o"]
    assert summary(result)["deleted"] == 5   # gone/old.c, gone/empty/x.c, gone/empty, other/a.c, other
    assert "gone: kept: holds excluded entries" in result.stderr


@needs_rsync
def test_sync_deletes_what_rsync_deletes_without_delete_excluded(tmp_path):
    spec = {"gone/cache.o": b"o", "gone/a/b/c.o": b"o", "gone/a/x": b"x", "gone/z": b"z",
            "same/k.o": b"o", "same/k": b"k", "lone.o": b"o"}
    src = build(tmp_path / "src", {"same/k": b"k"})
    ours, theirs = build(tmp_path / "ours", spec), build(tmp_path / "theirs", spec)

    assert run_mirror("sync", src, ours, "--exclude", "*.o").returncode == 0
    subprocess.run(["rsync", "-a", "--delete", "--exclude", "*.o", f"{os.fsdecode(src)}/",
                    f"{os.fsdecode(theirs)}/"], check=True, capture_output=True)

    assert set(snapshot(ours, mtimes=False)) == set(snapshot(theirs, mtimes=False))


def test_a_type_change_that_would_delete_an_excluded_entry_fails_that_entry(tmp_path):
    src = build(tmp_path / "src", {"x": b"now a file", "other": b"copied"})
    dst = build(tmp_path / "dst", {"x/keep.o": b"excluded", "x/plain": b"p"})

    result = run_mirror("sync", src, dst, "--exclude", "*.o", "--json")

    assert result.returncode == 1
    assert Path(os.fsdecode(dst + b"/x/keep.o")).read_bytes() == b"excluded"
    assert "x: not replaced: the folder in its place holds excluded entries" in result.stderr
    assert Path(os.fsdecode(dst + b"/other")).read_bytes() == b"copied"


def test_delete_excluded_deletes_them_too(tmp_path):
    src = build(tmp_path / "src", {"x": b"file", "both.o": b"in src, excluded"})
    dst = build(tmp_path / "dst", {"x/keep.o": b"o", "gone/cache.o": b"o", "both.o": b"old"})

    result = run_mirror("sync", src, dst, "--exclude", "*.o", "--delete-excluded", "--json")

    assert result.returncode == 0, result.stderr
    assert sorted(os.listdir(dst)) == [b"x"] and Path(os.fsdecode(dst + b"/x")).read_bytes() == b"file"
    assert summary(result)["deleted"] == 5   # x/keep.o, x, gone/cache.o, gone, both.o


def type_change_trees(tmp_path, files: int = 60):
    src = build(tmp_path / "src", {"data": b"a file now", "big": b"B" * 4096})
    dst = build(tmp_path / "dst", {f"data/f{number}": b"x" for number in range(files)})
    return src, dst


def test_max_delete_counts_every_entry_of_a_folder_a_type_change_replaces(tmp_path):
    src, dst = type_change_trees(tmp_path)
    before = snapshot(dst)

    result = run_mirror("sync", src, dst, "--max-delete", "0", "--json")

    assert result.returncode == 1
    assert "61 deletions planned, more than --max-delete 0: none done" in result.stderr
    assert summary(result)["deleted"] == 0
    assert {path: facts for path, facts in snapshot(dst).items() if path.startswith(b"data")} == {
        path: facts for path, facts in before.items() if path.startswith(b"data")}


def test_a_dry_run_counts_and_caps_the_deletions_of_a_type_change(tmp_path):
    src, dst = type_change_trees(tmp_path)
    before = snapshot(dst)

    capped = run_mirror("sync", "-n", src, dst, "--max-delete", "5", "--json")
    counted = run_mirror("sync", "-n", src, dst, "--json")

    assert capped.returncode == 1 and summary(capped)["deleted"] == 0
    assert "61 deletions planned" in summary(capped)["deletions_skipped"]
    assert counted.returncode == 0 and summary(counted)["deleted"] == 61
    assert snapshot(dst) == before


@needs_root
def test_no_type_change_deletes_after_another_entry_failed(tmp_path):
    disk = tmp_path / "disk"  # a small disk: `big` fails with ENOSPC
    disk.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", disk], check=True)
    try:
        src = build(tmp_path / "src", {"data": b"a file now", "big": b"B" * (2 << 20)})
        dst = build(disk / "dst", {f"data/f{number}": b"x" for number in range(60)})
        before = snapshot(dst)

        result = run_mirror("sync", src, dst, "--json", "--retries", "0")

        assert result.returncode == 1
        assert summary(result)["deleted"] == 0
        assert "deletions skipped because of errors" in result.stderr
        assert "data: not replaced: the folder in its place was not deleted" in result.stderr
        assert {path: facts for path, facts in snapshot(dst).items() if path.startswith(b"data")} == {
            path: facts for path, facts in before.items() if path.startswith(b"data")}
    finally:
        subprocess.run(["umount", "-l", disk], check=False)


def test_a_type_change_replaces_the_folder_and_counts_its_deletions(tmp_path):
    src, dst = type_change_trees(tmp_path)

    result = run_mirror("sync", src, dst, "--json")

    assert result.returncode == 0, result.stderr
    assert summary(result)["deleted"] == 61 and summary(result)["files_copied"] == 2
    assert snapshot(dst) == snapshot(src)


def test_names_that_only_look_like_temporary_files_are_never_removed(tmp_path):
    lookalikes = [b".mirror-tmp-0x00000000c0ffee", b".mirror-tmp-  +0000000000001",
                  b".mirror-tmp-0000_00000000001", b".mirror-tmp-00000000000000AB"]
    src = build(tmp_path / "src", {"a": b"a"})
    dst = build(tmp_path / "dst", {name: b"a user's file" for name in lookalikes})

    result = run_mirror("copy", src, dst, "--json")

    assert result.returncode == 0, result.stderr
    assert summary(result)["temp_files_removed"] == 0
    assert set(lookalikes) <= set(os.listdir(dst))


def test_check_lists_a_stale_temporary_file_that_sync_would_remove(tmp_path):
    src = build(tmp_path / "src", {"a": b"a", "sub/b": b"b"})
    dst = tmp_path / "dst"
    assert run_mirror("sync", src, dst).returncode == 0
    (dst / "sub/.mirror-tmp-0123456789abcdef").write_bytes(b"half")

    result = run_mirror("check", src, dst)

    assert result.returncode == 1
    assert "- sub/.mirror-tmp-0123456789abcdef  (temporary file of an interrupted run)" in result.stdout


@pytest.mark.slow
def test_no_temporary_file_survives_a_hundred_randomly_timed_signals(tmp_path):
    """Every file replaces an older one, so each is written under a temporary name."""
    names = [f"d{folder}/f{number}" for folder in range(4) for number in range(250)]
    src = build(tmp_path / "src", {name: os.urandom(3000) for name in names})
    old = build(tmp_path / "old", {name: b"old" for name in names})
    rng = random.Random(8)
    left: dict[int, list] = {}
    for start in range(0, 100, 4):  # four runs at a time, each signalled at a random moment
        group = []
        for number in range(start, start + 4):
            dst = tmp_path / f"dst{number}"
            shutil.copytree(os.fsdecode(old), dst, symlinks=True)
            signum = rng.choice([signal.SIGINT, signal.SIGTERM])
            process = subprocess.Popen([sys.executable, "-m", "mirror", "sync", os.fsdecode(src), dst],
                                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            group.append((number, dst, signum, time.monotonic() + rng.uniform(0.2, 0.55), process))
        for number, dst, signum, when, process in group:
            time.sleep(max(0.0, when - time.monotonic()))
            process.send_signal(signum)
        for number, dst, signum, when, process in group:
            process.wait(60)
            if temp_files(dst):
                left[number] = temp_files(dst)
            shutil.rmtree(dst)
    assert left == {}


@needs_root
@needs_rsync
def test_hard_links_of_every_kind_are_kept(tmp_path):
    src = build(tmp_path / "src", {"f": b"file", "p": Fifo(), "s": Link("target"), "sub/x": b"x"})
    os.mknod(src + b"/b3", stat.S_IFBLK | 0o600, os.makedev(7, 200))
    for first, second in [(b"f", b"f2"), (b"p", b"sub/p2"), (b"s", b"s2"), (b"b3", b"b3.5")]:
        os.link(src + b"/" + first, src + b"/" + second, follow_symlinks=False)
    dst = build(tmp_path / "dst", {"p2": b"in the way", "s2": Link("elsewhere")})

    result = run_mirror("sync", "-H", src, dst)

    assert result.returncode == 0, result.stderr
    itemized = subprocess.run(["rsync", "-aHn", "--checksum", "-i", "--delete", f"{os.fsdecode(src)}/",
                               f"{os.fsdecode(dst)}/"], capture_output=True, check=True)
    assert itemized.stdout == b""
    inodes = {name: os.lstat(os.path.join(dst, name)).st_ino for name in (b"p", b"sub/p2", b"s", b"s2",
                                                                        b"b3", b"b3.5", b"f", b"f2")}
    assert inodes[b"p"] == inodes[b"sub/p2"] and inodes[b"s"] == inodes[b"s2"]
    assert inodes[b"b3"] == inodes[b"b3.5"] and inodes[b"f"] == inodes[b"f2"]
    assert run_mirror("check", "-H", src, dst).returncode == 0
