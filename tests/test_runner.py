"""How the runner cuts work into tasks, so that every worker gets a share."""
from __future__ import annotations

from types import SimpleNamespace

from mirror.model import Action, Entry, Kind, Mode, Op, Reason
from mirror.options import Options
from mirror.run.folders import BIG_FILE
from mirror.run.runner import BATCH_FILES, Runner


def file_copy(name: str, size: int = 100) -> Action:
    path = name.encode()
    return Action(Op.COPY, path, Reason.MISSING, Entry(path, Kind.FILE, 0o100644, size, 0, 0, 0, 1, 1, 1))


def folder_update(name: str) -> Action:
    return Action(Op.DIR_META, name.encode(), Reason.MTIME)


def batches_of(actions, jobs: int, tmp_path) -> list[list[Action]]:
    engine = SimpleNamespace(width=jobs)  # the runner asks the engine how many tasks run at once
    runner = Runner(bytes(tmp_path), bytes(tmp_path), Mode.COPY, Options(), engine=engine)
    runner.add_to_batches(actions)
    return list(runner.batches)


def test_a_hundred_folder_updates_go_to_every_worker(tmp_path):
    batches = batches_of([folder_update(f"d{i}") for i in range(100)], 16, tmp_path)

    assert max(len(batch) for batch in batches) == 7  # 100 / 16, rounded up: 15 workers busy, not 1
    assert sorted(a.path for batch in batches for a in batch) == sorted(f"d{i}".encode() for i in range(100))


def test_batches_stay_small_and_big_files_go_alone(tmp_path):
    actions = [file_copy(f"f{i}") for i in range(2000)] + [file_copy("big", BIG_FILE)]
    batches = batches_of(actions, 2, tmp_path)

    assert max(len(batch) for batch in batches) == BATCH_FILES
    assert [a.path for a in batches[-2]] == [b"big"]
    assert sum(map(len, batches)) == 2001
