"""The operator's view of a run: the bar on a terminal, the lines off one, and the log."""
from __future__ import annotations

import fcntl
import io
import os
import pty
import re
import select
import struct
import sys
import termios
import unicodedata

from mirror import Options, copy_tree
from mirror.events import Discovered, Finished, Progress, ScanDone, Walked
from mirror.model import Op, Reason, Status
from mirror.plan.tree import LocalTree
from mirror.ui import progress
from mirror.ui.progress import Counts, LineSink

COUNTS = re.compile(r"copied ([\d,]+) of (≥?)([\d,]+) files, checked ([\d,]+)")


def on_a_terminal(columns: int, *args: str, resize_to: int | None = None) -> list[str]:
    """The frames a real `mirror` draws on a terminal `columns` wide; with `resize_to`, the
    terminal is made that wide once the first bar is drawn (a "RESIZED" mark among the frames)."""
    pid, fd = pty.fork()
    if pid == 0:  # the child: mirror on the terminal
        os.execv(sys.executable, [sys.executable, "-m", "mirror", *args])
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))
    out = b""
    while select.select([fd], [], [], 60)[0]:
        try:
            data = os.read(fd, 1 << 16)
        except OSError:  # the child is gone
            break
        if not data:
            break
        out += data
        if resize_to is not None and b"|" in out:
            fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", 24, resize_to, 0, 0))
            out += b"\rRESIZED copied\r"
            resize_to = None
    os.waitpid(pid, 0)
    text = out.decode("utf-8", "replace").replace("\r\n", "\n")
    return [frame for chunk in text.split("\n") for frame in chunk.split("\r") if "copied" in frame]


def width(text: str) -> int:
    return sum(2 if unicodedata.east_asian_width(char) in "WF" else 1 for char in text)


def test_at_60_columns_the_counts_stay_and_the_bar_fits(make_tree, tmp_path):
    src = make_tree({f"d{d}/f{i}": b"x" * 2000 for d in range(30) for i in range(40)})

    frames = on_a_terminal(60, "copy", "--progress", os.fsdecode(src), os.fsdecode(tmp_path / "dst"))

    bars = [frame for frame in frames if "|" in frame]
    assert bars, frames
    assert all(width(frame.rstrip()) <= 60 for frame in bars), [f for f in bars if width(f) > 60]
    for frame in bars:
        copied, _, total, _ = COUNTS.search(frame).groups()
        assert int(copied.replace(",", "")) <= int(total.replace(",", ""))
    assert COUNTS.search(bars[-1]).groups() == ("1,200", "", "1,200", "1,200")


def test_the_bar_follows_the_terminal_as_it_is_resized(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    with open(src / "big", "wb") as stream:  # written whole (--no-sparse): seconds of frames
        stream.truncate(3 << 30)

    frames = on_a_terminal(120, "copy", "--progress", "--no-sparse", os.fsdecode(src),
                           os.fsdecode(tmp_path / "dst"), resize_to=70)

    mark = frames.index("RESIZED copied")
    before, after = frames[:mark], [frame for frame in frames[mark + 1:] if "|" in frame]
    assert max(width(frame.rstrip()) for frame in before) > 70
    assert after and all(width(frame.rstrip()) <= 70 for frame in after[1:]), after
    assert all(COUNTS.search(frame) for frame in after)  # the counts stayed


def test_a_no_op_shows_the_files_it_checked(make_tree, tmp_path):
    src = make_tree({f"d{d}/f{i}": b"x" for d in range(10) for i in range(50)})
    copy_tree(src, tmp_path / "dst")

    frames = on_a_terminal(100, "sync", "--progress", os.fsdecode(src), os.fsdecode(tmp_path / "dst"))

    assert "copied 0 of 0 files, checked 500" in frames[-1]
    assert "0 B at 0 B/s" in frames[-1] and "GB" not in frames[-1] and "0.00B" not in frames[-1]


class SlowTree(LocalTree):
    """A local tree whose folder `slow` takes 1.5 s to list (a busy NFS server, say)."""

    def __reduce__(self):
        return SlowTree, (self.path,)

    def list(self, rel):
        if rel == b"slow":
            import time
            time.sleep(1.5)
        return super().list(rel)


def test_the_clock_runs_while_nothing_is_written(make_tree, tmp_path):
    src = make_tree({"slow/a": b"x", "b": b"y"})
    events = []

    copy_tree(SlowTree(os.fsencode(src)), tmp_path / "dst", Options(jobs=2), on_event=events.append)

    heartbeats = [event for event in events if event == Progress(0)]
    assert len(heartbeats) >= 2  # every 0.5 s while the slow folder was listed


def finished(path: bytes) -> Finished:
    return Finished(Op.COPY, path, Reason.MISSING, Status.DONE, 10)


def test_totals_are_estimated_while_the_walk_runs_and_marked_so():
    counts = Counts()
    for event in (Discovered(10, 1000), Walked(10, 2, 4), finished(b"a"), Progress(250)):
        counts.take(event)

    assert counts.totals() == (20, 2000)  # half the folders listed: twice what was found so far
    shown = counts.estimate(counts.started + 10)
    assert shown.startswith("~12%") and "~" in shown.split(", ")[-1]  # the time left too
    assert counts.counts() == "copied 1 of ≥10 files, checked 10"

    counts.take(ScanDone(10, 1000))
    assert counts.totals() == (10, 1000)
    assert counts.estimate(counts.started + 10).startswith("25%, 250 B at 25 B/s, 0:30 left")
    assert counts.counts() == "copied 1 of 10 files, checked 10"


def test_off_a_terminal_a_timestamped_line_every_5_seconds(monkeypatch):
    now = [1000.0]
    monkeypatch.setattr(progress.time, "monotonic", lambda: now[0])
    out = io.StringIO()
    sink = LineSink(out)
    for seconds, event in ((1, Discovered(4, 4000)), (2, Walked(4, 1, 1)), (3, ScanDone(4, 4000)),
                           (5, finished(b"a")), (6, Progress(1000)), (9, Progress(0)), (12, Progress(0))):
        now[0] = 1000.0 + seconds
        sink(event)

    lines = out.getvalue().splitlines()
    assert len(lines) == 2  # at 5 s and 12 s
    stamp = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d progress: "
    assert re.fullmatch(stamp + r"copied 1 of 4 files, checked 4, 0%, 0 B at 0 B/s", lines[0]), lines[0]
    assert re.fullmatch(stamp + r"copied 1 of 4 files, checked 4, 25%, 1\.0 KB at 83 B/s, 0:36 left",
                        lines[1]), lines[1]


def test_max_delete_lists_what_it_held_back_in_the_log_and_with_v(make_tree, tmp_path):
    from conftest import run_mirror
    src = make_tree({"keep": b"k"})
    dst = make_tree({"keep": b"k", **{f"old{i:02d}": b"x" for i in range(30)}}, tmp_path / "dst")
    log = tmp_path / "log"

    quiet = run_mirror("sync", "--max-delete", "5", src, dst)
    loud = run_mirror("sync", "--max-delete", "5", "-v", "--log-file", log, src, dst)

    assert quiet.returncode == loud.returncode == 1
    assert "held back" not in quiet.stderr
    held = [line for line in loud.stderr.splitlines() if "held back" in line]
    assert held[:2] == ["mirror: held back: delete old00", "mirror: held back: delete old01"]
    assert len(held) == 21 and held[-1] == "mirror: held back: and 10 more deletions"
    logged = [line.split(" ", 2)[2] for line in log.read_text().splitlines() if "held back" in line]
    assert logged == [line.removeprefix("mirror: ") for line in held]
    assert len(os.listdir(dst)) == 31  # nothing deleted


def test_a_refused_run_ends_its_log_with_its_exit_code(tmp_path):
    from conftest import run_mirror
    log = tmp_path / "log"

    result = run_mirror("copy", "--log-file", log, tmp_path / "missing", tmp_path / "dst")

    assert result.returncode == 2
    last = log.read_text().splitlines()[-2:]
    assert "error: source" in last[0] and last[1].split(" ", 2)[2] == "end: exit 2: nothing done"
