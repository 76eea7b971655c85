"""The compiled copy of small files: one call a folder batch, and every failure left to the pure code."""
from __future__ import annotations

import errno
import os

import pytest

from conftest import snapshot, temp_files
from mirror import InlineEngine, Options, copy_tree
from mirror import core
from mirror.model import Action, Mode, Op, Outcome, Reason, Status
from mirror.plan.scan import entry_from_stat
from mirror.plan.tree import LocalTree
from mirror.run import apply
from mirror.run.apply import Applier, Copied
from mirror.run.messages import Batch
from mirror.run.worker import Worker, WorkerSpec

pytestmark = pytest.mark.skipif(core.copy_files is None, reason=f"the pure core runs: {core.WHY}")


@pytest.fixture
def calls(monkeypatch):
    """Each call of the compiled copy: (its actions' paths, what it returned)."""
    made = []
    real = core.copy_files

    def copy_files(src_fd, dst_fd, actions, *rest):
        sizes = real(src_fd, dst_fd, actions, *rest)
        made.append(([action.path for action in actions], list(sizes)))
        return sizes
    monkeypatch.setattr(core, "copy_files", copy_files)
    return made


def planned(src, dst, names, reason=Reason.MISSING) -> list[Action]:
    """COPY actions for SRC's `names` as a planner makes them, DST's entry from its lstat."""
    actions = []
    for name in names:
        path = os.path.join(os.fsencode(dst), name)
        old = entry_from_stat(name, os.lstat(path)) if os.path.lexists(path) else None
        listed = entry_from_stat(name, os.lstat(os.path.join(os.fsencode(src), name)))
        actions.append(Action(Op.COPY, name, reason, listed, old))
    return actions


def test_small_files_are_copied_one_call_a_folder_batch(make_tree, tmp_path, calls):
    spec = {f"{folder}/{i:03}": os.urandom(i % 50) for folder, count in (("a", 40), ("b", 40), ("c", 300))
            for i in range(count)}
    src = make_tree({**spec, "a/holey": b"x" * (64 << 10)})  # not small: the pure code copies it
    dst = tmp_path / "dst"

    report = copy_tree(src, dst, Options(jobs=1), engine=InlineEngine)

    assert report.files_copied == 381 and report.exit_code == 0
    folders = sorted((paths[0].split(b"/")[0], len(paths)) for paths, _ in calls)
    assert folders == [(b"a", 40), (b"b", 40), (b"c", 44), (b"c", 256)]  # BATCH_FILES a call
    assert all(size >= 0 for _, sizes in calls for size in sizes)  # none declined
    assert snapshot(dst) == snapshot(src)


def test_a_batch_is_reported_and_its_bytes_counted(make_tree, tmp_path, calls):
    src = make_tree({f"f{i}": b"x" * i for i in range(10)})
    dst = tmp_path / "dst"
    dst.mkdir()
    heard = []
    applier = Applier(os.fsencode(src), os.fsencode(dst), Mode.COPY, Options(jobs=1), on_bytes=heard.append)
    actions = planned(src, dst, [b"f%d" % i for i in range(10)])

    outcomes = list(applier.apply_all(actions))

    assert outcomes == [Copied(actions, list(range(10)))] and heard == [45] and len(calls) == 1


@pytest.mark.parametrize("change", ["vanished", "changed", "dst folder", "dst appeared", "now a fifo"])
def test_what_the_compiled_copy_declines_the_pure_code_decides(make_tree, tmp_path, calls, change):
    src = make_tree({"a": b"first", "b": b"second", "c": b"third"})
    dst = tmp_path / "dst"
    dst.mkdir()
    (dst / "b").write_bytes(b"old")
    applier = Applier(os.fsencode(src), os.fsencode(dst), Mode.COPY, Options(jobs=1))
    actions = planned(src, dst, [b"a", b"b", b"c"])
    if change == "vanished":
        (src / "b").unlink()
    elif change == "changed":  # since the listing: the pure code copies it again, fresh
        (src / "b").write_bytes(b"second, longer")
    elif change == "dst folder":  # an empty folder now stands where the old file was
        (dst / "b").unlink()
        (dst / "b").mkdir()
    elif change == "dst appeared":
        actions[1] = actions[1]._replace(dst=None)  # listed as new: its name is taken now
    else:
        (src / "b").unlink()
        os.mkfifo(src / "b")

    outcomes = list(applier.apply_all(actions))

    declined = {"vanished": -errno.ENOENT, "changed": -errno.EAGAIN, "dst folder": -errno.EISDIR,
                "dst appeared": -errno.EEXIST, "now a fifo": -errno.EAGAIN}[change]
    assert [sizes for _, sizes in calls] == [[5, declined], [5]]  # the rest in a call of its own
    assert [type(outcome) for outcome in outcomes] == [Copied, Outcome, Copied]
    middle = outcomes[1]
    if change == "vanished":
        assert middle.status is Status.VANISHED and middle.error.errno == errno.ENOENT
        assert middle.error.filename == os.path.join(os.fsencode(src), b"b")
        assert not (dst / "b").exists() or (dst / "b").read_bytes() == b"old"
    elif change == "now a fifo":
        assert middle.status is Status.FAILED and middle.error.errno == errno.EINVAL
        assert (dst / "b").read_bytes() == b"old"
    else:
        assert middle.status is Status.DONE
        assert (dst / "b").read_bytes() == (src / "b").read_bytes()
    assert applier.files.restarts == (change in ("changed", "now a fifo"))
    assert (dst / "a").read_bytes() == b"first" and (dst / "c").read_bytes() == b"third"
    assert temp_files(dst) == []


def test_a_stop_takes_effect_between_two_calls_and_everything_placed_is_reported(make_tree, tmp_path, calls,
                                                                                  monkeypatch):
    names = [b"f%03d" % i for i in range(600)]
    src = make_tree({os.fsdecode(name): b"data" for name in names})
    dst = tmp_path / "dst"
    dst.mkdir()
    worker = Worker(WorkerSpec(LocalTree(os.fsencode(src)), os.fsencode(dst), Mode.COPY, Options(jobs=1)))
    counted = core.copy_files

    def stop_during_the_first(*args):
        worker.request_stop()  # as the stop signal's handler does, while a call runs
        return counted(*args)
    monkeypatch.setattr(core, "copy_files", stop_during_the_first)
    reports = []

    with pytest.raises(SystemExit):
        worker.run(Batch(1, tuple(planned(src, dst, names))), reports.append)
    worker.flush()

    reported = [path for report in reports for _, path, _, _ in report.done]
    assert len(calls) == 1 and sorted(reported) == sorted(os.listdir(os.fsencode(dst)))
    assert len(reported) == apply.BATCH_FILES


def test_the_pure_core_copies_file_by_file(make_tree, tmp_path, monkeypatch):
    monkeypatch.setattr(core, "copy_files", None)  # as MIRROR_PURE=1 leaves it
    src = make_tree({"f": b"x", "g": b"y"})
    dst = tmp_path / "dst"
    dst.mkdir()
    applier = Applier(os.fsencode(src), os.fsencode(dst), Mode.COPY, Options(jobs=1))

    outcomes = list(applier.apply_all(planned(src, dst, [b"f", b"g"])))

    assert [(type(outcome), outcome.nbytes) for outcome in outcomes] == [(Outcome, 1), (Outcome, 1)]
