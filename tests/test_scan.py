"""Listing a folder: every entry's lstat, in parallel when the store is remote."""
from __future__ import annotations

import itertools
import os
import threading

from conftest import Link
from mirror.paths import DirCache
from mirror.plan import scan


def listing(root) -> dict:
    folders = DirCache(os.fsencode(root))
    try:
        return {name: (st.st_mode, st.st_ino) for name, st in scan.list_folder(folders, b"").items()}
    finally:
        folders.close()


def test_a_slow_store_is_listed_by_threads_and_nothing_is_missed(make_tree, monkeypatch):
    spec = {**{f"f{i}": b"x" for i in range(40)}, "link": Link("f0"), "sub/inner": b"i"}
    root = make_tree(spec)
    local = listing(root)
    clock = itertools.count(step=1.0)  # every lstat seems to take a second
    monkeypatch.setattr(scan.time, "perf_counter", lambda: next(clock))
    threads = []
    real_lstat = scan.lstat_or_none

    vanished = []
    one_at_a_time = threading.Lock()

    def lstat(name, dir_fd):
        with one_at_a_time:
            threads.append(threading.current_thread().name)
            if name.startswith("f") and not vanished:
                vanished.append(name.encode())
                os.unlink(name, dir_fd=dir_fd)  # removed between its listing and its lstat
        return real_lstat(name, dir_fd)
    monkeypatch.setattr(scan, "lstat_or_none", lstat)

    remote = listing(root)

    assert len(threads) == len(local) - scan.PROBE_STATS
    assert all(name.startswith("lstat") for name in threads)
    del local[vanished[0]]
    assert remote == local


def test_a_local_store_is_listed_in_this_thread(make_tree, monkeypatch):
    root = make_tree({f"f{i}": b"x" for i in range(40)})
    called = []
    monkeypatch.setattr(scan, "lstat_or_none", lambda *args: called.append(args))

    assert len(listing(root)) == 40 and called == []
