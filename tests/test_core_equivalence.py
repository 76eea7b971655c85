"""Property: the compiled core and the pure-Python code make the same DST and report the same."""
from __future__ import annotations

import os
import random
import shutil
import stat
import tempfile
from collections import Counter

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import ROOT, Dir, Fifo, File, Link, build, snapshot
from mirror import InlineEngine, Options, copy_tree, core, sync_tree
from mirror.events import Finished
from mirror.run.fastcopy import SPARSE_MIN

pytestmark = pytest.mark.skipif(core.copy_files is None, reason=f"the pure core runs: {core.WHY}")

NAMES = st.sampled_from([b"a", b"b c", b"\xff\xfe", b"new\nline", b"n" * 255, b".hidden", b"-x", b"\x01"])
PATHS = st.lists(NAMES, min_size=1, max_size=3).map(tuple)
MODES = st.sampled_from([0o644, 0o600, 0o755, 0o444, 0o000, 0o4755, 0o2750, 0o6711, 0o1644])
SIZES = st.one_of(st.integers(0, 300), st.integers(0, SPARSE_MIN + 100))  # some past the small ones
MTIMES = st.integers(10**8, 2 * 10**9).map(lambda seconds: seconds * 10**9 + seconds % 999_999_937)
IDS = st.sampled_from([0, 1, 65534]) if ROOT else st.just(os.getuid())


def a_file(size: int, mode: int, mtime: int, uid: int, seed: int) -> tuple[File, int]:
    return File(random.Random(seed).randbytes(size), mode, mtime), uid


FILES = st.builds(a_file, SIZES, MODES, MTIMES, IDS, st.integers(0, 3))
ENTRIES = st.one_of(FILES, FILES, st.just((Dir(), None)), st.just((Dir(0o2775), None)),
                    st.sampled_from([(Link("a"), None), (Link(b"\xff/../x"), None), (Fifo(), None)]))
TREES = st.dictionaries(PATHS, ENTRIES, max_size=14)


def consistent(tree: dict) -> tuple[dict, dict]:
    """The entries whose parents are folders, by joined path, and the owners of the files."""
    spec, owners, kinds = {}, {}, {}
    for parts in sorted(tree, key=len):
        if any(parts[:i] in kinds and not isinstance(kinds[parts[:i]], Dir) for i in range(1, len(parts))):
            continue
        kinds[parts], uid = tree[parts]
        spec[b"/".join(parts)] = kinds[parts]
        if uid is not None:
            owners[b"/".join(parts)] = uid
    return spec, owners


def make(root: str, tree: dict) -> None:
    """Build `tree`; whatever has no mtime of its own gets one fixed time, so that two builds
    of one tree are alike."""
    spec, owners = consistent(tree)
    build(root, spec)
    base = os.fsencode(root)
    for folder, folders, names in os.walk(base, topdown=False):
        for name in folders + names:  # a link to a folder is among the folders
            os.utime(os.path.join(folder, name), ns=(10**18, 10**18), follow_symlinks=False)
        os.utime(folder, ns=(10**18, 10**18))
    for path, uid in owners.items():
        full, file = os.path.join(base, path), spec[path]
        os.chown(full, uid, uid)
        os.chmod(full, file.mode)  # chown cleared setuid and setgid
        os.utime(full, ns=(file.mtime_ns // 3, file.mtime_ns))  # an atime of its own


def run(src: str, dst: str, options: Options, sync: bool, compiled) -> tuple:
    """DST after a run with `compiled` as the copy of small files (None: the pure code), and
    what the run reported of every entry."""
    events = []
    saved = core.copy_files
    core.copy_files = compiled
    try:
        report = (sync_tree if sync else copy_tree)(src, dst, options, on_event=events.append,
                                                    engine=InlineEngine)
    finally:
        core.copy_files = saved
    finished = Counter((event.path, event.op, event.status, event.nbytes,
                        event.error.errno if event.error else None)
                       for event in events if isinstance(event, Finished))
    counts = (report.files_copied, report.files_failed, report.bytes_copied, report.exit_code)
    return times(dst), snapshot(dst), finished, counts


def times(root: str) -> dict[bytes, tuple[int, int]]:
    """(atime, mtime) of every regular file below root (snapshot reads them, and has no atime)."""
    found = {}
    for folder, _, names in os.walk(os.fsencode(root)):
        for name in names:
            st = os.lstat(os.path.join(folder, name))
            if stat.S_ISREG(st.st_mode):
                found[os.path.join(folder, name)[len(os.fsencode(root)):]] = (st.st_atime_ns, st.st_mtime_ns)
    return found


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(src_tree=TREES, dst_tree=TREES, owner=st.booleans(), sync=st.booleans(), sparse=st.booleans())
def test_the_compiled_and_the_pure_copy_agree(src_tree, dst_tree, owner, sync, sparse):
    root = tempfile.mkdtemp(prefix="mirror-core-")
    try:
        src = os.path.join(root, "src")
        make(src, src_tree)
        make(os.path.join(root, "c"), dst_tree)
        make(os.path.join(root, "pure"), dst_tree)
        options = Options(jobs=1, owner=owner, sparse=sparse, retries=0, allow_empty_src=True)

        listed = times(src)
        compiled = run(src, os.path.join(root, "c"), options, sync, core.copy_files)
        for path, stamps in listed.items():  # reading SRC's files moved their atimes
            os.utime(os.fsencode(src) + path, ns=stamps)
        pure = run(src, os.path.join(root, "pure"), options, sync, None)

        assert compiled == pure
    finally:
        for folder, _, _ in os.walk(root):
            os.chmod(folder, 0o755)  # a copied 0o555 folder must not keep rmtree out
        shutil.rmtree(root)
