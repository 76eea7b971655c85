"""Property: for random trees and random edits, sync makes DST equal to SRC."""
from __future__ import annotations

import os
import shutil
import tempfile

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, rule

from conftest import Dir, File, Link, build, snapshot, temp_files
from mirror import Options, check_tree, sync_tree
from mirror.errors import Interrupted
from mirror.events import Finished

NAMES = st.sampled_from([b"a", b"b", b"c d", b"\xff\xfe", b"new\nline", b"x" * 200, b".hidden"])
PATHS = st.lists(NAMES, min_size=1, max_size=3).map(tuple)
EVEN_MTIMES = st.integers(10**8, 10**9).map(lambda n: n * 2 * 10**9 + 2 * (n % 10**6))
VALUES = st.one_of(
    st.builds(File, st.binary(max_size=64), st.sampled_from([0o600, 0o644, 0o755]), EVEN_MTIMES),
    st.just(Dir()),
    st.sampled_from([Link("a"), Link("../b"), Link("/nonexistent")]),
)
TREES = st.dictionaries(PATHS, VALUES, max_size=12)


def consistent(tree: dict) -> dict:
    """Drop entries that would need a non-folder as a parent; join components to paths."""
    result, kinds = {}, {}
    for parts in sorted(tree, key=len):
        if any(parts[:i] in kinds and not isinstance(kinds[parts[:i]], Dir) for i in range(1, len(parts))):
            continue
        kinds[parts] = tree[parts]
        result[b"/".join(parts)] = tree[parts]
    return result


def edit(first: dict, changes: dict, removed: set) -> dict:
    """The next generation: some entries removed, some changed or added.

    Every generated mtime is even; a changed file gets an odd one, so that the quick check (size
    and mtime) can see every change, as it must for any mirror without --checksum.
    """
    def later(value):
        return File(value.data, value.mode, value.mtime_ns | 1) if isinstance(value, File) else value
    kept = {path: value for path, value in first.items() if path not in removed}
    return {**kept, **{path: later(value) for path, value in changes.items()}}


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tree=TREES, changes=TREES, removed=st.sets(PATHS, max_size=4), dst_junk=TREES,
       jobs=st.integers(1, 3))
def test_sync_makes_trees_equal(tree, changes, removed, dst_junk, jobs):
    first, second = tree, edit(tree, changes, removed)
    root = tempfile.mkdtemp(prefix="mirror-prop-")
    try:
        src, dst = os.path.join(root, "src"), os.path.join(root, "dst")
        build(src, consistent(first))
        build(dst, consistent(dst_junk))
        assert sync_tree(src, dst, Options(jobs=jobs, allow_empty_src=True)).exit_code == 0
        assert snapshot(dst) == snapshot(src)

        shutil.rmtree(src)
        build(src, consistent(second))  # unchanged entries keep their content and mtime
        report = sync_tree(src, dst, Options(jobs=jobs, allow_empty_src=True))

        assert report.exit_code == 0, report.errors
        assert snapshot(dst) == snapshot(src)
        assert check_tree(src, dst, Options(checksum=True)).differences == []
    finally:
        shutil.rmtree(root)


class Interrupt(Exception):
    pass


class MirrorMachine(RuleBasedStateMachine):
    """Random edits to SRC, full and interrupted syncs in any order; a full sync always repairs."""

    def __init__(self):
        super().__init__()
        self.root = tempfile.mkdtemp(prefix="mirror-machine-")
        self.src = os.path.join(self.root, "src")
        self.dst = os.path.join(self.root, "dst")
        os.mkdir(self.src)
        self.clock = 10**18  # every write gets a new mtime, so the quick check sees it

    def path(self, parts) -> bytes:
        return os.path.join(os.fsencode(self.src), *parts)

    def clear(self, path: bytes) -> None:
        if os.path.islink(path) or os.path.isfile(path):
            os.unlink(path)
        elif os.path.isdir(path):
            shutil.rmtree(path)

    def parent_ready(self, path: bytes) -> bool:
        """Make the missing folders above path; False if a file or link is in the way."""
        current = os.fsencode(self.src)
        for part in os.path.relpath(os.path.dirname(path), current).split(b"/"):
            if part == b".":
                continue
            current = os.path.join(current, part)
            if not os.path.lexists(current):
                os.mkdir(current)
            elif os.path.islink(current) or not os.path.isdir(current):
                return False
        return True

    @rule(parts=PATHS, data=st.binary(max_size=100), mode=st.sampled_from([0o600, 0o644, 0o755]))
    def write_file(self, parts, data, mode):
        path = self.path(parts)
        if not self.parent_ready(path):
            return
        self.clear(path)
        with open(path, "wb") as stream:
            stream.write(data)
        os.chmod(path, mode)
        self.clock += 1000
        os.utime(path, ns=(self.clock, self.clock))

    @rule(parts=PATHS)
    def make_folder(self, parts):
        path = self.path(parts)
        if self.parent_ready(path):
            self.clear(path)
            os.mkdir(path)

    @rule(parts=PATHS, link_to=st.sampled_from([b"a", b"../b", b"/nonexistent"]))
    def make_link(self, parts, link_to):
        path = self.path(parts)
        if self.parent_ready(path):
            self.clear(path)
            os.symlink(link_to, path)

    @rule(parts=PATHS)
    def remove(self, parts):
        self.clear(self.path(parts))

    @rule(jobs=st.integers(1, 3), after=st.integers(0, 6))
    def interrupted_sync(self, jobs, after):
        finished = 0

        def stop_after_some(event):
            nonlocal finished
            if isinstance(event, Finished):
                finished += 1
                if finished > after:
                    raise KeyboardInterrupt

        try:
            sync_tree(self.src, self.dst, Options(jobs=jobs, allow_empty_src=True), on_event=stop_after_some)
        except Interrupted as stop:
            assert stop.exit_code == 130 and stop.report.interrupted
        assert temp_files(self.dst) == []

    @rule(jobs=st.integers(1, 3))
    def full_sync(self, jobs):
        report = sync_tree(self.src, self.dst, Options(jobs=jobs, allow_empty_src=True))
        assert report.exit_code == 0, report.errors
        assert snapshot(self.dst) == snapshot(self.src)

    def teardown(self):
        try:
            sync_tree(self.src, self.dst, Options(jobs=2, allow_empty_src=True))
            assert check_tree(self.src, self.dst, Options(checksum=True)).differences == []
            assert snapshot(self.dst) == snapshot(self.src)
        finally:
            shutil.rmtree(self.root)


MirrorMachine.TestCase.settings = settings(max_examples=12, stateful_step_count=8, deadline=None,
                                           suppress_health_check=[HealthCheck.too_slow])
TestMirrorMachine = MirrorMachine.TestCase
