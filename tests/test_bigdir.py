"""A folder with many entries is split in chunks across workers: copy, sync, check and no-op."""
from __future__ import annotations

import os

import pytest

from conftest import Dir, Link, snapshot
from mirror import Options, check_tree, copy_tree, sync_tree
from mirror.events import Walked
from mirror.plan import march
from mirror.plan.march import CHUNK_NAMES, chunks_of, names_of


@pytest.fixture(autouse=True)
def small_chunks(monkeypatch):
    """Folders of more than 12 entries split in chunks of 5 (workers are forked: they see it)."""
    monkeypatch.setattr(march, "SPLIT_AT", 12)
    monkeypatch.setattr(march, "CHUNK_NAMES", 5)
    from mirror.run import worker
    monkeypatch.setattr(worker, "SPLIT_AT", 12)


def big_folder(count: int = 40, prefix: str = "big/f") -> dict:
    return {f"{prefix}{number:03d}": b"x" * number for number in range(count)}


def walked(report_events: list) -> int:
    """Folders and chunks listed, as the progress events count them."""
    return max(event.folders_done for event in report_events if type(event) is Walked)


@pytest.mark.parametrize("jobs", [1, 2])
def test_a_big_folder_is_copied_whole_in_chunks(make_tree, tmp_path, jobs):
    src = make_tree({**big_folder(), "big/sub/inner": b"i", "big/link": Link("f001"), "small/a": b"a"})
    events: list = []

    report = copy_tree(src, tmp_path / "dst", Options(jobs=jobs), on_event=events.append)

    assert report.exit_code == 0 and report.files_copied == 42
    assert snapshot(tmp_path / "dst") == snapshot(src)  # the big folder's mtime too: set after all chunks
    # root, big, small, big/sub, and big's 42 entries in 9 chunks of at most 5
    assert walked(events) == 4 + 9


def test_a_rerun_skips_every_file_of_a_big_folder(make_tree, tmp_path):
    src = make_tree(big_folder(100))
    copy_tree(src, tmp_path / "dst", Options(jobs=2))
    before = snapshot(tmp_path / "dst")

    report = sync_tree(src, tmp_path / "dst", Options(jobs=2))

    assert report.files_skipped == 100 and report.files_copied == 0 and report.deleted == 0
    assert report.metadata_updated == 0, "no chunk changed a name: the folder's metadata is left alone"
    assert snapshot(tmp_path / "dst") == before


def test_sync_of_a_big_folder_deletes_what_src_lacks_in_every_chunk(make_tree):
    shared = big_folder(30)
    src = make_tree({**shared, **big_folder(10, "big/new")})
    dst = make_tree({**shared, **big_folder(25, "big/old"), "big/olddir/a/b": b"1", "big/f005": Dir(),
                     "big/zz": Link("f000")})

    report = sync_tree(src, dst, Options(jobs=2))

    assert report.exit_code == 0
    assert snapshot(dst) == snapshot(src)
    assert report.deleted == 25 + 3 + 1 + 1  # old files, olddir/a/b, the folder in f005's place, zz


def test_check_finds_every_difference_in_a_big_folder(make_tree):
    src = make_tree(big_folder(30))
    dst = os.fsencode(src) + b"-dst"
    copy_tree(src, dst, Options(jobs=2))
    (src / "big/only-src").write_bytes(b"s")
    with open(os.path.join(dst, b"big/f017"), "wb") as changed, open(os.path.join(dst, b"big/only-dst"), "wb"):
        changed.write(b"changed")
    os.utime(os.path.join(dst, b"big"), ns=(os.stat(src / "big").st_mtime_ns,) * 2)

    report = check_tree(src, dst, Options(jobs=2))

    assert report.exit_code == 1
    assert sorted(difference.path for difference in report.differences) == [
        b"big/f017", b"big/only-dst", b"big/only-src"]


def test_chunks_cover_every_name_once_and_cut_both_sides_at_the_same_names():
    src = [b"%03d" % number for number in range(0, 200, 3)]
    dst = [b"%03d" % number for number in range(0, 200, 2)]

    chunks = chunks_of(list(src), list(dst))

    assert sorted(name for chunk in chunks for name in names_of(chunk.src)) == sorted(src)
    assert sorted(name for chunk in chunks for name in names_of(chunk.dst)) == sorted(dst)
    for chunk in chunks:
        assert 0 < len(names_of(chunk.src)) <= march.CHUNK_NAMES and len(names_of(chunk.dst)) <= march.CHUNK_NAMES
    for before, after in zip(chunks, chunks[1:]):  # in name order: a name's two sides meet
        assert max(names_of(before.src) + names_of(before.dst)) < min(names_of(after.src) + names_of(after.dst))
    assert CHUNK_NAMES == 4096  # the module's own value, not the fixture's


def test_a_folder_mostly_to_delete_is_cut_by_dst_s_names_too():
    dst = [b"%03d" % number for number in range(100)]

    chunks = chunks_of([b"050"], list(dst))

    assert sorted(name for chunk in chunks for name in names_of(chunk.dst)) == dst
    assert all(len(names_of(chunk.dst)) <= march.CHUNK_NAMES for chunk in chunks)
    assert [chunk.src for chunk in chunks].count(b"050") == 1


def test_a_big_folder_that_cannot_be_read_in_a_chunk_is_an_error_not_a_hang(make_tree, monkeypatch):
    src = make_tree(big_folder(40))
    dst = os.fsencode(src) + b"-dst"
    real = march.Planner.listings

    def listings(self, rel, dst_there, chunk):
        if chunk is not None and b"f020" in names_of(chunk.src):
            raise PermissionError(13, "Permission denied")
        return real(self, rel, dst_there, chunk)
    monkeypatch.setattr(march.Planner, "listings", listings)

    report = copy_tree(src, dst, Options(jobs=1))

    assert report.exit_code == 1 and any(b"big" == failure.path for failure in report.errors)
    assert report.files_copied == 35


def test_sync_checks_that_src_is_not_empty_without_listing_its_root(make_tree, tmp_path, monkeypatch):
    """A root of a million entries, each listed with its lstat, held 700 MB in the master."""
    from mirror.plan.tree import LocalTree
    src = make_tree(big_folder(40, "f"))
    listed = []
    real = LocalTree.list
    monkeypatch.setattr(LocalTree, "list", lambda self, rel: listed.append(rel) or real(self, rel))

    report = sync_tree(src, tmp_path / "dst", Options(jobs=1))

    assert report.files_copied == 40 and listed == []
