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


def test_the_bar_never_shows_more_done_than_its_total(make_tree, tmp_path, monkeypatch):
    import re

    from mirror.ui import progress
    monkeypatch.setattr(progress, "DRAW_EVERY_S", 0)  # draw at every event
    src = make_tree({f"d{d}/f{i}": b"x" * 10 for d in range(20) for i in range(30)})
    events = []
    copy_tree(src, tmp_path / "dst", Options(jobs=2), on_event=events.append)
    bar = progress.BarSink()
    seen = []
    refresh = bar.bar.refresh
    bar.bar.refresh = lambda *args: (seen.append((bar.bar.desc, bar.bar.tail)), refresh(*args))
    for event in events:
        bar(event)
    bar.close()

    frames = [re.search(r"copied ([\d,]+) of (≥?)([\d,]+) files, checked ([\d,]+)", desc) for desc, _ in seen]
    assert len(frames) > 10 and all(frames)
    for match in frames:
        copied, growing, total, checked = match.groups()
        assert int(copied.replace(",", "")) <= int(total.replace(",", "")) <= 600
        assert int(checked.replace(",", "")) >= int(copied.replace(",", ""))
    assert frames[0].group(2) == "≥" and frames[-1].groups() == ("600", "", "600", "600")
    assert seen[-1][1].startswith("100%, 6.0 KB")  # the summary's units


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
