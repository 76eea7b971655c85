"""Property: for random trees and random edits, sync makes DST equal to SRC."""
from __future__ import annotations

import os
import shutil
import tempfile

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import Dir, File, Link, build, snapshot
from mirror import Options, check_tree, sync_tree

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
