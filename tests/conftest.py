"""Shared test helpers: make_tree builds a tree from a dict, snapshot reads one back."""
from __future__ import annotations

import hashlib
import os
import resource
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mirror import copy_tree
from mirror.ui.cli import app

ROOT = os.geteuid() == 0
# A suite started under nohup (SIGHUP ignored) would hand that to every command it runs, and
# mirror keeps a signal ignored at its start ignored: the tests of SIGHUP need its default.
signal.signal(signal.SIGHUP, signal.SIG_DFL)
needs_root = pytest.mark.skipif(not ROOT, reason="needs root (owners, device files)")


@dataclass(frozen=True)
class Dir:
    mode: int = 0o755


@dataclass(frozen=True)
class Link:
    target: str | bytes


@dataclass(frozen=True)
class Fifo:
    pass


@dataclass(frozen=True)
class File:
    data: bytes
    mode: int | None = None
    mtime_ns: int | None = None


def make_dirs(path: bytes) -> None:
    """os.makedirs without recursion, for trees deeper than Python's recursion limit."""
    missing = []
    while path and not os.path.isdir(path):
        missing.append(path)
        path = os.path.dirname(path)
    for folder in reversed(missing):
        os.mkdir(folder)


ODD_NAMES = {
    b"caf\xe9 latin-1.txt": b"not utf-8",
    "with space/and\nnewline": b"x",
    "long/" + "n" * 255: b"255 bytes",
    "unicode/\u00e9t\u00e9 \U0001f600": b"emoji",
}


def every_case() -> dict:
    return {
        "a/b.txt": b"hi",
        "a/empty.bin": b"",
        "a/big.bin": os.urandom(3 << 20),
        "private": File(b"secret", mode=0o600),
        "exec.sh": File(b"#!/bin/sh\n", mode=0o755),
        "readonly.txt": File(b"ro", mode=0o444),
        "old": File(b"old", mtime_ns=946684800_123456789),
        "empty/dir": Dir(),
        "locked": Dir(mode=0o555),
        "link-rel": Link("a/b.txt"),
        "link-abs": Link("/etc/hostname"),
        "link-dangling": Link("nowhere/at/all"),
        "link-dir": Link("a"),
        "pipe": Fifo(),
        **ODD_NAMES,
    }


def build(root: Path | bytes, spec: dict) -> bytes:
    """Create `spec` ({relative path: bytes | File | Dir | Link | Fifo}) below root."""
    base = os.fsencode(root)
    make_dirs(base)
    for rel, value in spec.items():
        path = os.path.join(base, os.fsencode(rel))
        make_dirs(os.path.dirname(path))
        if isinstance(value, bytes):
            value = File(value)
        if isinstance(value, File):
            with open(path, "wb") as out:
                out.write(value.data)
            if value.mode is not None:
                os.chmod(path, value.mode)
            if value.mtime_ns is not None:
                os.utime(path, ns=(value.mtime_ns, value.mtime_ns))
        elif isinstance(value, Dir):
            make_dirs(path)
            os.chmod(path, value.mode)
        elif isinstance(value, Link):
            os.symlink(os.fsencode(value.target), path)
        elif isinstance(value, Fifo):
            os.mkfifo(path)
        else:
            raise TypeError(f"unknown spec value {value!r}")
    return base


@pytest.fixture
def make_tree(tmp_path):
    """make_tree({"a/b.txt": b"hi"}) -> the new tree's root (a Path)."""
    count = 0

    def make(spec: dict, root: Path | None = None) -> Path:
        nonlocal count
        count += 1
        root = root or tmp_path / f"tree{count}"
        build(root, spec)
        return root

    return make


def snapshot(root, mtimes: bool = True, dir_mtimes: bool = True) -> dict[bytes, tuple]:
    """Every entry below root (and root itself as b"."): kind, permissions, owner, mtime, content."""
    base = os.fsencode(root)
    result = {}
    stack = [b""]
    while stack:
        rel = stack.pop()
        path = os.path.join(base, rel) if rel else base
        st = os.lstat(path)
        kind = stat.S_IFMT(st.st_mode)
        if stat.S_ISREG(st.st_mode):
            with open(path, "rb") as stream:
                content = hashlib.sha256(stream.read()).hexdigest()
        elif stat.S_ISLNK(st.st_mode):
            content = os.readlink(path)
        elif stat.S_ISDIR(st.st_mode):
            content = None
            stack.extend(os.path.join(rel, name) if rel else name for name in os.listdir(path))
        else:
            content = st.st_rdev
        keep_mtime = mtimes and (dir_mtimes or not stat.S_ISDIR(st.st_mode))
        result[rel or b"."] = (kind, stat.S_IMODE(st.st_mode) if kind != stat.S_IFLNK else None,
                               st.st_uid, st.st_gid, st.st_mtime_ns if keep_mtime else None, content)
    return result


def link_groups(root) -> set[frozenset[bytes]]:
    """Sets of paths that share an inode (hard links), for trees compared with -H."""
    base = os.fsencode(root)
    groups: dict[int, set[bytes]] = {}
    for rel in snapshot(root, mtimes=False):
        st = os.lstat(os.path.join(base, rel))
        if stat.S_ISREG(st.st_mode) and st.st_nlink > 1:
            groups.setdefault(st.st_ino, set()).add(rel)
    return {frozenset(group) for group in groups.values()}


@contextmanager
def file_size_limit(nbytes: int):
    """Writes past `nbytes` fail with EFBIG in this process and the workers it forks."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (nbytes, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))


def temp_files(root) -> list[bytes]:
    """mirror's temporary files below root; safe to call while a run changes the tree."""
    from mirror.paths import is_temp_name
    found, stack = [], [os.fsencode(root)]
    while stack:
        folder = stack.pop()
        try:
            with os.scandir(folder) as items:
                for item in items:
                    if is_temp_name(item.name):
                        found.append(os.path.relpath(item.path, os.fsencode(root)))
                    elif item.is_dir(follow_symlinks=False):
                        stack.append(item.path)
        except (FileNotFoundError, NotADirectoryError):
            continue
    return found


@pytest.fixture
def pure_copy(monkeypatch):
    """Files copied by the pure code only, for a test that fakes a change of SRC inside it (a
    real change makes the compiled copy decline the file to that code: test_core_copy.py)."""
    from mirror import core
    monkeypatch.setattr(core, "copy_files", None)


@pytest.fixture
def cli():
    """cli("copy", src, dst, "-v") -> click Result, through typer's CliRunner."""
    runner = CliRunner()

    def invoke(*args):
        return runner.invoke(app, [os.fsdecode(a) if isinstance(a, (bytes, Path)) else a for a in args])

    return invoke


def run_mirror(*args, **kwargs) -> subprocess.CompletedProcess:
    """The real command in a subprocess: exit codes and signals as a user sees them."""
    command = [sys.executable, "-m", "mirror", *map(os.fsdecode, args)]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, **kwargs)


NOBODY = 65534


@pytest.fixture
def open_dir():
    """A folder every user can reach (pytest's own are root's alone)."""
    path = Path(tempfile.mkdtemp(prefix="mirror-test-"))
    os.chmod(path, 0o755)
    yield path
    shutil.rmtree(path)


def run_as_nobody(function, *args) -> int:
    """Run function(*args) in a forked child with nobody's uid and gid; its exit code."""
    # A run as root first imports here what a run imports lazily (and ctypes, which workers
    # import): the interpreter's own folder may be closed to nobody (it is under /root here).
    import ctypes  # noqa: F401
    import multiprocessing
    warm = Path(tempfile.mkdtemp())
    (warm / "src").mkdir()
    copy_tree(warm / "src", warm / "dst")
    shutil.rmtree(warm)

    def child():
        os.setgroups([])
        os.setgid(NOBODY)
        os.setuid(NOBODY)
        sys.exit(function(*args))
    process = multiprocessing.get_context("fork").Process(target=child)
    process.start()
    process.join(60)
    return process.exitcode


HANDLED = (1 << signal.SIGTERM - 1) | (1 << signal.SIGHUP - 1)  # their bits in /proc masks


def handlers_set(pid: int) -> bool:
    """mirror has set its handlers for SIGTERM and SIGHUP (Python has none of its own for them),
    or, its work done, ignores them."""
    try:
        with open(f"/proc/{pid}/status") as status:
            masks = [int(line.split()[1], 16) for line in status if line.startswith(("SigCgt:", "SigIgn:"))]
    except OSError:
        return False
    return any(mask & HANDLED == HANDLED for mask in masks)


def wait_for_handlers(pid: int, timeout: float = 30.0) -> None:
    """Until mirror has its stop handlers (a signal in Python's own first milliseconds kills it)."""
    deadline = time.monotonic() + timeout
    while not handlers_set(pid) and time.monotonic() < deadline:
        time.sleep(0.002)
