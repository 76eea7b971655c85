"""A big file is copied by several workers at once, in parts; nothing half-copied gets a name."""
from __future__ import annotations

import errno
import os
import time

import pytest

from conftest import snapshot, temp_files
from mirror import Options, copy_tree
from mirror.events import Progress
from mirror.run import parts, runner, worker
from mirror.run.fastcopy import BIG_FILE, Copier

MIB = 1 << 20
SIZE = BIG_FILE + 4 * MIB   # a big file: copied by batches, not inside its folder's task


@pytest.fixture(autouse=True)
def small_parts(monkeypatch):
    """Parts of 4 MiB for files of 8 MiB or more (workers are forked: they see it)."""
    monkeypatch.setattr(parts, "PART_BYTES", 4 * MIB)
    monkeypatch.setattr(runner, "SPLIT_MIN", 8 * MIB)


@pytest.fixture
def part_log(monkeypatch, tmp_path):
    """The pid and extents of every part a worker copies, as 'pid start' lines."""
    log = tmp_path / "parts.log"
    real = worker.copy_part

    def logged(applier, part, on_bytes):
        with open(log, "a") as out:
            out.write(f"{os.getpid()} {part.extents[0][0] if part.extents else -1}\n")
        time.sleep(0.05)  # a part takes a while: one quick worker does not take them all
        return real(applier, part, on_bytes)
    monkeypatch.setattr(worker, "copy_part", logged)
    return log


def big_file(root, name="big.img", data=None) -> bytes:
    data = os.urandom(SIZE) if data is None else data
    os.makedirs(root, exist_ok=True)
    path = os.path.join(root, name)
    with open(path, "wb") as out:
        out.write(data)
    os.chmod(path, 0o640)
    os.utime(path, ns=(1_600_000_000_000_000_000, 1_600_000_000_000_000_000))
    return data


def test_a_big_file_is_copied_in_parts_by_every_worker(tmp_path, part_log):
    big_file(tmp_path / "src")
    events: list = []

    report = copy_tree(tmp_path / "src", tmp_path / "dst", Options(jobs=2), on_event=events.append)

    assert report.exit_code == 0 and report.files_copied == 1 and report.bytes_copied == SIZE
    assert snapshot(tmp_path / "dst") == snapshot(tmp_path / "src")
    lines = part_log.read_text().split("\n")[:-1]
    assert len(lines) == SIZE // (4 * MIB), "one part every 4 MiB"
    assert len({line.split()[0] for line in lines}) == 2, "both workers copied parts"
    assert sum(event.nbytes for event in events if type(event) is Progress) == SIZE


def test_a_sparse_big_file_is_cut_by_its_data_and_keeps_its_holes(tmp_path, part_log):
    src = tmp_path / "src"
    src.mkdir()
    data = os.urandom(3 * MIB)
    with open(src / "disk.img", "wb") as out:
        for offset in (0, 20 * MIB, 40 * MIB):
            out.seek(offset)
            out.write(data)
        out.truncate(64 * MIB)  # ends in a hole

    report = copy_tree(src, tmp_path / "dst", Options(jobs=2))

    assert report.exit_code == 0
    assert (tmp_path / "dst/disk.img").read_bytes() == (src / "disk.img").read_bytes()
    assert os.stat(tmp_path / "dst/disk.img").st_blocks * 512 < 12 * MIB, "holes stay holes"
    starts = sorted(int(line.split()[1]) for line in part_log.read_text().split("\n")[:-1])
    assert starts == [0, 20 * MIB + MIB, 40 * MIB + 2 * MIB], "9 MiB of data in parts of 4 MiB"


def test_a_part_that_fails_fails_the_file_and_dst_keeps_its_old_version(tmp_path, monkeypatch):
    big_file(tmp_path / "src")
    old = big_file(tmp_path / "dst", data=b"old version")
    os.utime(tmp_path / "dst/big.img", ns=(1, 1))  # not equal: the file is copied
    real = Copier.copy_extent

    def failing(self, src_fd, dst_fd, start, length, on_bytes):
        if start >= 8 * MIB:
            raise OSError(errno.EIO, "Input/output error")
        return real(self, src_fd, dst_fd, start, length, on_bytes)
    monkeypatch.setattr(Copier, "copy_extent", failing)
    events: list = []

    report = copy_tree(tmp_path / "src", tmp_path / "dst", Options(jobs=2, retries=0), on_event=events.append)

    assert report.exit_code == 1 and report.files_failed == 1
    assert [failure.error.errno for failure in report.errors] == [errno.EIO]
    assert (tmp_path / "dst/big.img").read_bytes() == old
    assert temp_files(tmp_path / "dst") == []
    assert sum(event.nbytes for event in events if type(event) is Progress) == 0, "what failed is taken back"


def test_a_file_changed_while_its_parts_were_copied_gets_no_name(tmp_path, monkeypatch):
    big_file(tmp_path / "src")
    real = worker.copy_part

    def changing(applier, part, on_bytes):
        done = real(applier, part, on_bytes)
        if part.extents[0][0] == 0:
            os.utime(tmp_path / "src/big.img", ns=(5, 5))  # SRC is written to meanwhile
        return done
    monkeypatch.setattr(worker, "copy_part", changing)

    report = copy_tree(tmp_path / "src", tmp_path / "dst", Options(jobs=2, retries=0))

    assert report.exit_code == 1 and "changed while it was copied" in str(report.errors[0].error)
    assert not (tmp_path / "dst/big.img").exists() and temp_files(tmp_path / "dst") == []


def test_a_stopped_run_removes_the_temporary_file_of_a_file_not_finished(tmp_path):
    from mirror.model import Mode
    from mirror.run.apply import Applier
    from mirror.plan.tree import LocalTree
    big_file(tmp_path / "src")
    (tmp_path / "dst").mkdir()
    tree = LocalTree(os.fsencode(tmp_path / "src"))
    name, entry = b"big.img", tree.entry(b"", b"big.img", os.lstat(tmp_path / "src/big.img"))
    from mirror.model import Action, Op, Reason
    split_files = parts.SplitFiles(Applier(tree, os.fsencode(tmp_path / "dst"), Mode.COPY, Options()))

    tmp, cut = split_files.start(Action(Op.COPY, name, Reason.MISSING, entry, None))

    assert temp_files(tmp_path / "dst") == [tmp] and len(cut) == SIZE // (4 * MIB)
    split_files.abandon()
    assert temp_files(tmp_path / "dst") == []


def test_cut_groups_extents_in_parts_of_equal_data():
    assert parts.cut([(0, 10)], 4) == [((0, 4),), ((4, 4),), ((8, 2),)]
    assert parts.cut([(0, 3), (10, 3), (20, 1)], 4) == [((0, 3), (10, 1)), ((11, 2), (20, 1))]
    assert parts.cut([], 4) == [()]


# The Pool forks a new worker from this (threaded) test process: Python 3.12+ warns of it
@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
@pytest.mark.parametrize("deaths", [1, 2])
def test_a_worker_that_dies_in_a_part_has_it_run_again_then_fails_the_file(tmp_path, monkeypatch, deaths):
    big_file(tmp_path / "src")
    real, marks = worker.copy_part, tmp_path / "deaths"

    def dying(applier, part, on_bytes):
        if part.extents[0][0] == 4 * MIB and len(marks.read_text() if marks.exists() else "") < deaths:
            with open(marks, "a") as out:
                out.write("x")
            os._exit(9)
        return real(applier, part, on_bytes)
    monkeypatch.setattr(worker, "copy_part", dying)

    report = copy_tree(tmp_path / "src", tmp_path / "dst", Options(jobs=2, retries=0))

    assert temp_files(tmp_path / "dst") == []
    if deaths == 1:
        assert report.exit_code == 0 and snapshot(tmp_path / "dst") == snapshot(tmp_path / "src")
    else:
        assert report.exit_code == 1 and "worker process died" in str(report.errors[0].error)
        assert not (tmp_path / "dst/big.img").exists()


def test_an_interrupted_copy_in_parts_leaves_no_temporary_file(tmp_path):
    import signal
    import subprocess
    import sys
    src = tmp_path / "src"
    src.mkdir()
    with open(src / "huge", "wb") as stream:
        stream.truncate(1 << 30)  # with --no-sparse every byte is written: slow enough to stop
    dst = tmp_path / "dst"
    process = subprocess.Popen([sys.executable, "-m", "mirror", "copy", src, dst, "-j", "2", "--no-sparse"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.monotonic() + 30
    while not (dst.is_dir() and temp_files(dst)):
        assert time.monotonic() < deadline, "the copy never started"
        time.sleep(0.005)
    time.sleep(0.2)  # parts under way

    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)

    assert process.returncode == 130 and "Traceback" not in stderr
    assert temp_files(dst) == [] and not (dst / "huge").exists()


def test_mirror_copy_spreads_a_sparse_image_over_the_workers_by_its_data(tmp_path, cli, part_log):
    src = tmp_path / "src"
    src.mkdir()
    with open(src / "vm.img", "wb") as out:
        for offset in range(0, 48 * MIB, 12 * MIB):
            out.seek(offset)
            out.write(os.urandom(4 * MIB))
        out.truncate(50 * MIB)

    result = cli("copy", "-j", "2", src, tmp_path / "dst")

    assert result.exit_code == 0, result.output
    assert (tmp_path / "dst/vm.img").read_bytes() == (src / "vm.img").read_bytes()
    assert os.stat(tmp_path / "dst/vm.img").st_blocks * 512 < 20 * MIB, "holes stay holes"
    lines = part_log.read_text().split("\n")[:-1]
    assert sorted(int(line.split()[1]) for line in lines) == [0, 12 * MIB, 24 * MIB, 36 * MIB]
    assert len({line.split()[0] for line in lines}) == 2, "both workers copied parts"


def test_big_files_go_whole_while_others_wait_and_only_the_last_is_split(tmp_path, part_log):
    first = big_file(tmp_path / "src", "a.img")
    big_file(tmp_path / "src", "b.img")

    report = copy_tree(tmp_path / "src", tmp_path / "dst", Options(jobs=2))

    assert report.exit_code == 0 and snapshot(tmp_path / "dst") == snapshot(tmp_path / "src")
    assert (tmp_path / "dst/a.img").read_bytes() == first
    assert len(part_log.read_text().split("\n")[:-1]) == SIZE // (4 * MIB), "one file in parts"
