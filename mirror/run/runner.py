"""Drive a run: hand folders and batches to an engine, count what comes back, emit events."""
from __future__ import annotations

import errno
import time
from collections import deque
from collections.abc import Callable

from ..errors import HeldStop, Interrupted, Terminated, signal_number, take_stop
from ..model import (RETRYABLE, Action, Mode, NotWritten, Op, Outcome, Problem, Status,
                     fills_dst)
from ..options import Options
from ..paths import depth
from ..plan.march import Planner
from ..plan.tree import LocalTree, SourceTree
from ..report import Failure, Report
from .engine import Engine, EngineFailure, LostTask, Message, Task
from .lost import failed_report, sweep_temp_files
from ..events import Discovered, Event, Finished, Noticed, Progress, Retrying, ScanDone, Walked
from .messages import Batch, WorkerReport
from .fastcopy import BIG_FILE
from .folders import Folder, FolderResult, FolderTask, replaces_folder
from .parts import SPLIT_MIN, Part, PartDone, splitting
from .signals import sigterm_raises

HEARTBEAT_S = 0.5           # a Progress(0) at least this often: the sinks' clocks run
BATCH_FILES = 256
BATCH_BYTES = 64 << 20
FOLDERS_PER_TASK = 16
RETRIED = frozenset({Op.COPY, Op.SYMLINK, Op.SPECIAL, Op.SET_META})
RETRY_PAUSE_S = 0.25        # doubled at each round

OnEvent = Callable[[Event], None]


class Runner:
    """Hands out folders to the engine as the walk finds them, then the work that must wait;
    the one driver of copy, sync and check (which plans in the workers and applies nothing).

    Workers create, plan and copy one folder each (both listings complete) and send back where
    to go next. Hard links, deletions and folder metadata come back to the master, which hands
    them out again after all copying: one depth at a time, deepest first, so a folder is empty
    before it is removed and its metadata is set after everything inside it.
    """

    def __init__(self, src: SourceTree, dst_root: bytes, mode: Mode, options: Options,
                 engine: Engine, on_event: OnEvent | None = None, notices: tuple[Problem, ...] = ()) -> None:
        self.dst_root = dst_root
        self.mode, self.options, self.engine = mode, options, engine
        self.checking = mode is Mode.CHECK   # workers plan and compare; nothing is applied
        self.held_stop = HeldStop()
        self.width = engine.width
        self.on_event = on_event or (lambda event: None)
        self.report = Report(mode, self.width, options.dry_run, strict=options.strict)
        self.planner = Planner(src, LocalTree(dst_root), mode, options)  # -H decisions, in one place
        # Folders go out in 4 tasks a worker, so that the work spreads evenly; where every task
        # costs round trips (a remote SRC: its listings are asked for together), in 1: at 50 ms
        # a no-op of 100 folders on 8 workers took 3 rounds of tasks more.
        self.shares = 1 if getattr(src, "round_trips", False) else 4
        self.folders: list[Folder] = []
        self.batches: deque[list[Action]] = deque()
        self.folders_pending = 0
        self.tasks = 0
        self.planned_files = self.planned_bytes = 0
        self.scanning = True
        self.attempt = 0
        self.retry: list[Action] = []
        self.hardlinks: list[Action] = []
        self.deletions: list[Action] = []
        self.replacements: list[Action] = []   # entries whose place a DST folder holds
        self.dir_metas: list[Action] = []
        self.dst_full: OSError | None = None   # the first ENOSPC, EDQUOT or EROFS in DST
        self.rerun: set[int] = set()           # tasks run again after their worker died
        self.lost: list[Task] = []             # tasks whose worker died: their temporary files
        self.notices = notices                 # found before the run (what DST cannot keep)
        self.walk = [0, 1]                     # folders listed, folders found
        self.folder_counts: dict[int, int] = {}  # folders in each folder task under way
        # big folders split in chunks: path -> [chunks not done, any changed, SRC's, DST's entry]
        self.splits: dict[bytes, list] = {}
        self.last_event = 0.0
        # Big files are copied by several workers at once where SRC gives descriptors
        self.split_files = splitting(self.planner.src, dst_root, mode, options, self.width)

    def run(self) -> Report:
        started = time.monotonic()
        try:
            with sigterm_raises():
                for problem in self.notices:
                    self.notice(problem)
                self.copy_phase()
                self.finish_phase()
                self.take_leftovers(self.engine.close())
        except EngineFailure as failure:
            self.take_leftovers(self.engine.abort())
            self.report.errors.append(Failure(None, f"{failure}; the run is incomplete"))
        except (KeyboardInterrupt, Terminated) as stop:
            self.take_leftovers(self.engine.abort())
            self.report.interrupted = True
            self.report.elapsed_s = time.monotonic() - started
            raise Interrupted(signal_number(stop), self.report) from None
        except BaseException:
            self.take_leftovers(self.engine.abort())
            raise
        finally:
            self.planner.close()
            if self.split_files is not None:
                self.split_files.abandon()  # nothing, unless the run stopped halfway
            self.report.workers_used = self.engine.workers_used
        self.report.elapsed_s = time.monotonic() - started
        return self.report

    def copy_phase(self) -> None:
        self.start()
        self.drain()
        for attempt in range(1, self.options.retries + 1):
            if not self.retry:
                break
            time.sleep(RETRY_PAUSE_S * 2 ** (attempt - 1))
            self.attempt = attempt
            actions, self.retry = self.retry, []
            self.add_to_batches(actions)
            self.drain()

    def start(self) -> None:
        """The first work: the walk from the roots (a one-file run starts from its action)."""
        self.folders.append(Folder(*self.planner.tops(), None))

    def drain(self) -> None:
        """Hand out folders and batches until every task, and every one they led to, is done."""
        while self.folders or self.batches or self.engine.pending:
            if signum := take_stop():  # a stop raised where Python dropped it (a finalizer)
                raise Terminated(signum)
            limit = self.width * self.engine.depth
            # Batches first: what folders hand back is then never hoarded while the walk goes on.
            while self.batches and self.engine.pending < limit:
                if self.dst_full is not None:  # no new write is started in a full DST
                    self.hold_back(self.batches.popleft())
                    continue
                actions = self.batches.popleft()
                # A big file is split only when nothing else waits to keep the other workers
                # busy: parts of one file contend for its inode (ext4 takes the inode's lock
                # for every write: 8 files of 512 MiB all split took 2.0 s, whole 1.7 s), so
                # whole files spread over the workers first, and parts fill what would idle.
                if (len(actions) == 1 and self.split_files is not None and actions[0].size >= SPLIT_MIN
                        and not self.batches):
                    self.split(actions[0])
                else:
                    self.submit(Batch(self.tasks, tuple(actions)))
            while self.folders and self.engine.pending < limit:
                self.submit_folders()
            if not self.folders and not self.folders_pending:
                self.end_scan()
            if self.engine.pending:
                # A stop waits (0.5 s at most) until the report being read is counted: raised
                # in the middle, it would drop a report the workers no longer have.
                with self.held_stop:
                    for message in self.engine.receive(HEARTBEAT_S):
                        if type(message) is LostTask:
                            self.lose(message.task)
                        else:
                            self.absorb(message)
                    if time.monotonic() - self.last_event >= HEARTBEAT_S:
                        self.last_event = time.monotonic()
                        self.on_event(Progress(0))
                if not self.engine.pending:
                    self.sweep_lost()  # nothing runs: what is left was theirs
        self.end_scan()

    def lose(self, task: Task) -> None:
        """A worker died doing `task`: run it once more; if it dies again, its entries failed."""
        self.lost.append(task)
        if task.id in self.rerun:
            self.absorb(failed_report(task))
        else:
            self.rerun.add(task.id)
            self.engine.submit(task)

    def take_leftovers(self, messages: list[Message]) -> None:
        """What an engine still reported as it stopped: every entry put in place is counted;
        the temporary files of workers that had to be killed are removed."""
        telling = True
        for message in messages:
            if type(message) is LostTask:
                self.lost.append(message.task)
                continue
            for finished in message.finished():
                self.report.record(finished)
                if telling:
                    try:
                        self.on_event(finished)
                    except (KeyboardInterrupt, Terminated):
                        telling = False  # a second stop: the counts stay right, sinks hear no more
        self.sweep_lost()

    def sweep_lost(self) -> None:
        """Remove what workers that died were writing, in the folders of their tasks."""
        if self.lost:
            sweep_temp_files(self.dst_root, self.lost)
            self.lost.clear()

    def end_scan(self) -> None:
        """Once, when no folder is left to walk: the totals are final."""
        if self.scanning:
            self.scanning = False
            self.on_event(ScanDone(self.planned_files, self.planned_bytes))

    def submit_folders(self) -> None:
        """A few folders a task when many wait, so that every worker still gets a share."""
        count = max(1, min(FOLDERS_PER_TASK, len(self.folders) // (self.shares * self.width)))
        folders = tuple(self.folders[-count:])
        del self.folders[-count:]
        self.folder_counts[self.tasks] = count
        self.submit(FolderTask(self.tasks, folders[::-1]))
        self.folders_pending += 1

    def submit(self, task) -> None:
        self.engine.submit(task)
        self.tasks += 1

    def absorb(self, report: WorkerReport) -> None:
        for finished in report.successes():
            self.done(finished)
        for outcome in report.outcomes:  # failures keep their whole action, to be retried
            self.record(outcome)
        self.report.retried += report.restarts
        if report.nbytes:  # after the files it finishes, so a bar drawn now counts them
            self.last_event = time.monotonic()
            self.on_event(Progress(report.nbytes))
        if type(report.result) is PartDone:
            self.part_done(report.result)
        elif report.result is not None:
            self.walk[0] += self.folder_counts.pop(report.task_id, 0)
            self.take_folder(report.result)

    def take_folder(self, result: FolderResult) -> None:
        self.folders_pending -= 1
        self.folders.extend(reversed(result.subfolders))
        self.report.files_skipped += result.skipped
        self.walk[1] += len(result.subfolders)
        self.discover(result.files, result.nbytes)
        self.on_event(Walked(result.skipped + result.files, *self.walk))
        for problem in result.problems:
            self.notice(problem)
        for src, dst, count in result.splits:
            self.splits[src.path] = [count, False, src, dst]
        for path, changed in result.chunks_done:
            self.chunk_done(path, changed)
        for action in result.later:
            if action.op is Op.DELETE:
                self.deletions.append(action)
            elif action.op is Op.DIR_META:
                self.dir_metas.append(action)
            else:
                self.replacements.append(action)
        self.add_to_batches(result.handoff)
        self.add_to_batches(self.decide_linked(result.linked))

    def split(self, action: Action) -> None:
        """A big file: its parts go to every worker free (see parts.py)."""
        try:
            tmp, parts = self.split_files.start(action)
        except OSError as error:
            self.record(Outcome.failed(action, error))
            return
        for extents in parts:
            self.submit(Part(self.tasks, action, tmp, extents))

    def part_done(self, done: PartDone) -> None:
        finished = self.split_files.part_done(done)
        if finished is not None:
            outcome, nbytes = finished
            if outcome.status is not Status.DONE and nbytes:
                self.on_event(Progress(-nbytes))  # progress counts only what was copied
            self.record(outcome)

    def chunk_done(self, path: bytes, changed: bool) -> None:
        """Once every chunk of a big folder is planned, the folder's own metadata is."""
        split = self.splits[path]
        split[0] -= 1
        split[1] = split[1] or changed
        if split[0]:
            return
        del self.splits[path]
        for planned in self.planner.plan_dir_meta(split[2], split[3], split[1]):
            if isinstance(planned, Problem):
                self.notice(planned)
            else:
                self.dir_metas.append(planned)

    def decide_linked(self, linked) -> list[Action]:
        actions = []
        for item in linked:
            decided = self.planner.decide_linked(item.src, item.dst)
            if isinstance(decided, Problem):
                self.notice(decided)
            elif replaces_folder(decided):
                self.replacements.append(decided)  # after the folder in its place is deleted
            elif decided.op is Op.HARDLINK:
                self.hardlinks.append(decided)  # after the file it links to is written
            elif decided.op is Op.SKIP:
                self.report.skip(decided)
            else:
                if decided.op is Op.COPY:
                    self.discover(1, decided.size)
                actions.append(decided)
        return actions

    def notice(self, problem: Problem) -> None:
        if self.checking:
            self.report.differ(problem)
        else:
            self.report.notice(problem)
        self.on_event(Noticed(problem))

    def discover(self, files: int, nbytes: int) -> None:
        if files:
            self.planned_files += files
            self.planned_bytes += nbytes
            self.on_event(Discovered(files, nbytes))

    def add_to_batches(self, actions) -> None:
        """Big files alone, the rest by count and size, so that every worker gets a share
        (a few hundred folder updates are several batches, not one: on a network
        filesystem each is a few round trips)."""
        if self.checking:  # check does nothing: a folder's findings are differences at once
            for action in actions:
                self.settle(Outcome.done(action))
            return
        if not isinstance(actions, list):
            actions = list(actions)
        most = max(1, min(BATCH_FILES, -(-len(actions) // self.width)))
        batch: list[Action] = []
        size = 0
        for action in actions:
            if action.size >= BIG_FILE:
                self.batches.append([action])
                continue
            batch.append(action)
            size += action.size
            if len(batch) >= most or size >= BATCH_BYTES:
                self.batches.append(batch)
                batch, size = [], 0
        if batch:
            self.batches.append(batch)

    def record(self, outcome: Outcome) -> None:
        if outcome.status is Status.FAILED:
            error = outcome.error
            if (outcome.action.op in RETRIED and error is not None and error.errno in RETRYABLE
                    and self.attempt < self.options.retries):
                self.retry.append(outcome.action)  # only failed entries are tried again, not the tree
                self.report.retried += 1
                self.on_event(Retrying(outcome.action.path, error))
                return
            if self.dst_full is None and fills_dst(error):
                self.dst_full = error
        self.settle(outcome)

    def hold_back(self, actions: list[Action]) -> None:
        """Fail a batch without starting it: DST is full (or read-only)."""
        full = self.dst_full
        for action in actions:
            self.settle(Outcome.failed(action, NotWritten(full.errno, full.strerror)))

    def settle(self, outcome: Outcome) -> None:
        self.done(Finished.of(outcome))

    def done(self, finished: Finished) -> None:
        if self.checking:  # what sync would do, as a difference
            self.report.differ(finished)
        else:
            self.report.record(finished)
        self.on_event(finished)

    def finish_phase(self) -> None:
        """Hard links, then deletions, then what replaces a deleted folder, then folders'
        metadata. Deletions all pass may_delete, those that clear a folder's place too, so a
        refusal leaves the folder and fails what would have replaced it."""
        self.attempt = self.options.retries  # retries are over: what fails now is reported
        if self.checking:
            self.add_to_batches(self.hardlinks + self.deletions + self.replacements + self.dir_metas)
            self.report.differences.sort(key=lambda difference: difference.path)  # walk order
            return
        self.run_round(self.hardlinks)
        deleted = bool(self.deletions) and self.may_delete()
        if deleted:
            self.run_by_depth(self.deletions)
        if self.replacements:
            if self.deletions and not deleted:
                for action in self.replacements:
                    error = OSError(errno.ENOTEMPTY, "not replaced: the folder in its place was not "
                                    f"deleted ({self.report.deletions_skipped})")
                    self.settle(Outcome.failed(action, error))
            else:  # hard links last: one may link to a file that replaces a folder
                self.run_round([action for action in self.replacements if action.op is not Op.HARDLINK])
                self.run_round([action for action in self.replacements if action.op is Op.HARDLINK])
        self.run_by_depth(self.dir_metas)

    def run_round(self, actions: list[Action]) -> None:
        self.add_to_batches(actions)
        self.drain()

    def run_by_depth(self, actions: list[Action]) -> None:
        """Deepest first; each depth is done in parallel, and finished before the next."""
        by_depth: dict[int, list[Action]] = {}
        for action in actions:
            by_depth.setdefault(depth(action.path), []).append(action)
        for level in sorted(by_depth, reverse=True):
            self.run_round(by_depth[level])

    def may_delete(self) -> bool:
        count, limit = len(self.deletions), self.options.max_delete
        if self.report.errors:
            self.report.deletions_skipped = f"{count} deletions skipped because of errors"
        elif limit is not None and count > limit:
            self.report.deletions_skipped = f"{count} deletions planned, more than --max-delete {limit}: none done"
            self.report.deletions_refused = True
        else:
            return True
        self.report.warnings.append(self.report.deletions_skipped)
        self.report.held_back = [action.path for action in self.deletions]
        return False
