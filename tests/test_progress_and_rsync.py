"""Every finished file reaches the sinks through the queue; rsync agrees the trees are equal."""
from __future__ import annotations

import os
import shutil
import subprocess
from collections import Counter

import pytest

from conftest import every_case
from mirror import Options, copy_tree, sync_tree
from mirror.model import Op
from mirror.events import Discovered, Finished, Progress, ScanDone


@pytest.mark.parametrize("jobs", [1, 3])
def test_one_finished_event_per_file(make_tree, tmp_path, jobs):
    src = make_tree({f"d{i % 7}/f{i}": bytes(i % 50) for i in range(700)})
    events = []

    report = copy_tree(src, tmp_path / "dst", Options(jobs=jobs), on_event=events.append)

    finished = Counter(e.path for e in events
                       if isinstance(e, Finished) and e.op is Op.COPY)
    assert len(finished) == 700 and set(finished.values()) == {1}
    assert sum(e.nbytes for e in events if isinstance(e, Progress)) == report.bytes_copied
    scan_done = [e for e in events if isinstance(e, ScanDone)]
    assert len(scan_done) == 1 and scan_done[0].files == 700
    assert sum(e.files for e in events if isinstance(e, Discovered)) == 700


def test_the_bar_shows_the_files_counted_when_it_is_drawn(make_tree, tmp_path):
    from mirror.ui.progress import BarSink
    src = make_tree({f"f{i}": b"x" * 10 for i in range(5)})
    events = []
    copy_tree(src, tmp_path / "dst", Options(jobs=1), on_event=events.append)
    bar = BarSink()
    seen = []
    drawn = bar.bar.update

    def update(nbytes):
        seen.append(bar.bar.postfix)
        drawn(nbytes)
    bar.bar.update = update
    for event in events:
        bar(event)
    done_then = [sum(1 for e in events[:i] if isinstance(e, Finished)) for i, e in enumerate(events)
                 if isinstance(e, Progress)]
    bar.close()

    assert seen and all(f"{count:,}/" in shown for shown, count in zip(seen, done_then))
    assert seen[-1].startswith("5/")  # a report's bytes come after its files: drawn, they count
    assert bar.bar.postfix.startswith("5/5 files") and bar.bar.n == 50


def test_big_file_reports_bytes_while_it_is_copied(make_tree, tmp_path):
    src = make_tree({"big": b"\1" * (96 << 20)})
    events = []

    copy_tree(src, tmp_path / "dst", Options(jobs=2), on_event=events.append)

    progress = [e.nbytes for e in events if isinstance(e, Progress)]
    assert sum(progress) == 96 << 20
    assert len(progress) >= 2 or progress == [96 << 20]  # at least one event; more on slow disks


needs_rsync = pytest.mark.skipif(shutil.which("rsync") is None,
                                 reason="rsync is not installed (.ci/run installs it with apt-get)")


@needs_rsync
@pytest.mark.parametrize("jobs", [1, 4])
def test_rsync_finds_nothing_to_do_after_sync(make_tree, tmp_path, jobs):
    src = make_tree({**every_case(), "linked/a": b"hard"})
    os.link(src / "linked/a", src / "linked/b")
    dst = make_tree({"stale": b"old", "a/b.txt": b"other"})

    report = sync_tree(src, dst, Options(jobs=jobs, hard_links=True))

    assert report.exit_code == 0, report.errors
    itemized = subprocess.run(["rsync", "-aHn", "--checksum", "-i", "--delete", f"{src}/", f"{dst}/"],
                              capture_output=True, check=True)
    assert itemized.stdout == b""
