"""The benchmark cases: what each copies, how each round starts from the same state, its targets."""
from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from . import memory, trees
from .fusefs import Mount, fuse_missing
from .loopfs import LoopFs
from .runner import (GIB, CaseResult, Measurement, SkipCase, Target, Trash, finish, slug, start,
                     timed_run)
from .tools import (COPYTREE, CP, RSYNC, RSYNC_DELETE, TAR, Tool, mirror_missing, mirror_tool,
                    rsync_missing)

SLOW_DELAY = 0.002          # seconds added to every lookup/getattr, open and create


@dataclass
class Context:
    """What every case shares: where data lives, the trash, the scale and mirror's settings."""

    data: Path
    trash: Trash
    quick: bool
    mirror_jobs: int
    update_command: str       # mirror subcommand for the noop / touch1pct cases
    warmup: bool = True

    @property
    def specs(self) -> dict[str, trees.TreeSpec]:
        return trees.tree_specs(self.quick)


class Case:
    """First copy of one tree into a fresh DST per tool and round; subclasses change the state."""

    metric = "seconds"

    def __init__(self, ctx: Context, name: str, description: str, tree: str,
                 tools: list[Tool], targets: list[Target] | None = None,
                 pairs: list[tuple[str, str]] | None = None, rounds: int = 5) -> None:
        self.ctx, self.name, self.description = ctx, name, description
        self.tree, self.tools, self.default_rounds = tree, tools, rounds
        self._targets, self._pairs = targets or [], pairs
        self.spec = ctx.specs[tree]
        self.src = Path()
        self.dst_root = ctx.data / "dst" / name
        self.trash = ctx.trash                # where this case's copies go (same filesystem)

    def contenders(self) -> list[Tool]:
        return self.tools

    def unavailable(self, tool: Tool) -> str | None:
        if tool.is_mirror:
            return mirror_missing()
        if tool in (RSYNC, RSYNC_DELETE):
            return rsync_missing()
        return None

    def pairs(self, tools: list[Tool]) -> list[tuple[str, str]]:
        """Default ratios: every mirror variant against every anchor."""
        if self._pairs is not None:
            return self._pairs
        return [(m.label, a.label) for m in tools if m.is_mirror for a in tools if not a.is_mirror]

    def targets(self) -> list[Target]:
        return self._targets

    def setup(self, tools: list[Tool]) -> None:
        self.src = self.make_source()
        self.dst_root.mkdir(parents=True, exist_ok=True)
        if self.ctx.warmup:
            trees.warm(self.src)

    def make_source(self) -> Path:
        """SRC: the case's tree, built once under the data folder and reused."""
        return trees.build_tree(self.spec, self.ctx.data, self.ctx.trash.move)

    def before_round(self, rnd: int) -> None:
        pass

    def prepare(self, tool: Tool, rnd: int) -> tuple[Path, Path]:
        dst = self.dst_root / f"{slug(tool.label)}-r{rnd}"
        self.trash.move(dst)                           # left by an interrupted run
        self.trash.ensure_free(self.spec.approx_bytes())
        return self.src, dst

    def run(self, tool: Tool, src: Path, dst: Path, rnd: int) -> Measurement:
        return timed_run(tool, src, dst, rnd)

    def verify(self, tool: Tool, src: Path, dst: Path, rnd: int) -> str | None:
        """After round 1: DST holds as many files, folders and bytes as SRC."""
        if rnd != 1:
            return None
        want, got = trees.tree_summary(src), trees.tree_summary(dst)
        return None if want == got else f"(files, folders, bytes) {got} != source {want}"

    def after(self, tool: Tool, rnd: int, dst: Path) -> None:
        self.trash.move(dst, self.spec.files)

    def teardown(self, result: CaseResult) -> None:
        pass


class UpToDate(Case):
    """Each tool re-runs into its own DST that it brought up to date once, untimed."""

    def setup(self, tools: list[Tool]) -> None:
        super().setup(tools)
        for tool in tools:
            dst = self.synced_dst(tool)
            self.trash.move(dst, self.spec.files)
            code, error = finish(start(tool, self.src, dst))       # BENCH_TIMEOUT applies
            if code != 0:
                raise SkipCase(f"preparing the up-to-date DST with {tool.label} failed: {error}")

    def synced_dst(self, tool: Tool) -> Path:
        return self.dst_root / f"{slug(tool.label)}-synced"

    def prepare(self, tool: Tool, rnd: int) -> tuple[Path, Path]:
        return self.src, self.synced_dst(tool)

    def after(self, tool: Tool, rnd: int, dst: Path) -> None:
        pass                                              # kept for the next round

    def teardown(self, result: CaseResult) -> None:
        for tool in self.tools:
            self.trash.move(self.synced_dst(tool), self.spec.files)


class Touch(UpToDate):
    """Before each round the same 1% of SRC files flip to other content with a new mtime, so
    every tool's DST (synced to the previous round) has exactly those files to copy."""

    def setup(self, tools: list[Tool]) -> None:
        super().setup(tools)
        self.rewriter = trees.Rewriter(self.spec, self.src)
        self.description += f" ({len(self.rewriter.indices):,} files rewritten per round)"

    def before_round(self, rnd: int) -> None:
        self.rewriter.flip()

    def verify(self, tool: Tool, src: Path, dst: Path, rnd: int) -> str | None:
        if not trees.same_files(src, dst, self.rewriter.relpaths):
            return "a rewritten file differs in DST (content or mtime)"
        return super().verify(tool, src, dst, rnd)

    def teardown(self, result: CaseResult) -> None:
        if hasattr(self, "rewriter"):
            self.rewriter.restore()
        super().teardown(result)


class OnLoopFs:
    """Put before a Case class: SRC, every copy and the trash on a fresh ext4 of the case's own
    (bench/loopfs.py), SRC an untimed `cp -a` of the tree cached under the data folder; the
    filesystem goes at the end with all on it, so nothing is deleted file by file. Without a
    loop mount (not root, no loop device), the same in a plain folder of the data folder."""

    fs: LoopFs | None = None

    def make_source(self) -> Path:
        self.cached = super().make_source()
        self.loop_notes: list[str] = []
        copies = 1 + len(self.tools) * 6            # SRC, then 5 rounds and a synced DST per tool
        room = shutil.disk_usage(self.ctx.data).free - 16 * GIB  # the image only takes what is written
        self.fs = LoopFs(self.ctx.data, self.name, min(self.spec.approx_bytes() * copies + GIB, room),
                         self.spec.files * copies + 10**4)
        if self.fs.mounted:
            root = self.fs.root
            self.trash = Trash(root / "trash", margin=256 * trees.MIB)
            self.loop_notes.append("SRC and DST on a fresh ext4 (no journal) loop-mounted for the "
                                   "case, SRC an untimed cp -a of the cached tree")
        else:
            root = self.ctx.data / "unmounted" / self.name
            self.loop_notes.append(f"not on a fresh loop filesystem: {self.fs.problem}")
        self.dst_root = root / "dst"
        src = root / "src"
        self.trash.move(src)                        # left by an interrupted run
        self.fill(src)
        return src

    def fill(self, src: Path) -> None:
        clone(self.cached, src)

    def teardown(self, result: CaseResult) -> None:
        super().teardown(result)
        result.notes.extend(getattr(self, "loop_notes", []))
        if self.fs is not None:
            if not self.fs.mounted:
                self.trash.move(self.src, self.spec.files)
            self.fs.close()


def clone(src: Path, dst: Path) -> None:
    """dst becomes a `cp -a` copy of src (untimed preparation); SkipCase when that fails."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(CP.argv(src, dst), capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SkipCase(f"copying {src} to {dst} with cp -a failed: {done.stderr.strip()[-300:]}")


class LoopCase(OnLoopFs, Case):
    """First copy into a fresh DST per tool and round, on a fresh ext4."""


class LoopUpToDate(OnLoopFs, UpToDate):
    """Re-runs into an up-to-date DST (each tool's own, synced once by it), on a fresh ext4."""


class LoopTouch(OnLoopFs, Touch):
    """1% of SRC rewritten before each round, into up-to-date DSTs, on a fresh ext4."""


class Pruned(OnLoopFs, Case):
    """sync after a fixed half of SRC's files went: SRC holds the other half, and before every
    run DST becomes a full copy of the tree again (`cp -a` of the cached tree, untimed, into a
    new folder), so each tool and round deletes the same files from the same state."""

    def fill(self, src: Path) -> None:
        gone = set(trees.pick(self.spec, 0.5, salt=2))
        trees.copy_files(self.cached, src, [rel for index, rel in trees.iter_relpaths(self.spec)
                                            if index not in gone])
        self.description += f" ({len(gone):,} deleted)"

    def prepare(self, tool: Tool, rnd: int) -> tuple[Path, Path]:
        src, dst = super().prepare(tool, rnd)
        clone(self.cached, dst)
        return src, dst


class SlowFs(Case):
    """SRC and DST on two FUSE passthroughs that sleep 2 ms per lookup/getattr, open, create."""

    def setup(self, tools: list[Tool]) -> None:
        reason = fuse_missing()
        if reason:
            raise SkipCase(reason)
        self.src_real = trees.build_tree(self.spec, self.ctx.data, self.ctx.trash.move)
        mnt = self.ctx.data / "mnt"
        self.dst_real = self.dst_root
        self.dst_real.mkdir(parents=True, exist_ok=True)
        self.mounts = [Mount(self.src_real, mnt / "slow-src", SLOW_DELAY, mnt / "slow-src.json"),
                       Mount(self.dst_real, mnt / "slow-dst", SLOW_DELAY, mnt / "slow-dst.json")]
        self.entered: list[Mount] = []
        try:
            for mount in self.mounts:
                self.entered.append(mount.__enter__())
        except RuntimeError as error:
            self._unmount()
            raise SkipCase(str(error)) from None
        self.src = self.mounts[0].mountpoint

    def prepare(self, tool: Tool, rnd: int) -> tuple[Path, Path]:
        name = f"{slug(tool.label)}-r{rnd}"
        self.ctx.trash.move(self.dst_real / name)
        return self.src, self.mounts[1].mountpoint / name

    def verify(self, tool: Tool, src: Path, dst: Path, rnd: int) -> str | None:
        return super().verify(tool, self.src_real, self.dst_real / dst.name, rnd)

    def after(self, tool: Tool, rnd: int, dst: Path) -> None:
        self.ctx.trash.move(self.dst_real / dst.name, self.spec.files)   # bypassing FUSE

    def _unmount(self) -> None:
        for mount in reversed(getattr(self, "entered", [])):
            mount.__exit__(None, None, None)
        self.entered = []

    def teardown(self, result: CaseResult) -> None:
        self._unmount()
        for mount in getattr(self, "mounts", []):
            stats = mount.stats()
            if stats:
                counts = stats.get("counts", {})
                delayed = sum(counts.get(op, 0) for op in ("getattr", "open", "create"))
                result.notes.append(
                    f"{mount.mountpoint.name}: {sum(counts.values()):,} FUSE ops "
                    f"({delayed:,} delayed), peak {stats.get('max_concurrent')} concurrent")


class Memory(Case):
    """mirror alone on trees of empty files; the metric is the peak PSS of its process tree."""

    metric = "peak_pss_mb"

    def __init__(self, ctx: Context, name: str, description: str,
                 tools_trees: list[tuple[Tool, str]], targets: list[Target],
                 pairs: list[tuple[str, str]] | None = None) -> None:
        super().__init__(ctx, name, description, tools_trees[-1][1],
                         [tool for tool, _tree in tools_trees], targets, pairs=pairs or [],
                         rounds=1)
        self.tree_of = {tool.label: ctx.specs[tree] for tool, tree in tools_trees}
        self.src_of: dict[str, Path] = {}

    def setup(self, tools: list[Tool]) -> None:
        self.dst_root.mkdir(parents=True, exist_ok=True)
        for tool in tools:
            spec = self.tree_of[tool.label]
            self.src_of[tool.label] = trees.build_tree(spec, self.ctx.data, self.ctx.trash.move)

    def prepare(self, tool: Tool, rnd: int) -> tuple[Path, Path]:
        _src, dst = super().prepare(tool, rnd)
        return self.src_of[tool.label], dst

    def run(self, tool: Tool, src: Path, dst: Path, rnd: int) -> Measurement:
        return memory.sampled_run(tool, src, dst, rnd)

    def after(self, tool: Tool, rnd: int, dst: Path) -> None:
        self.ctx.trash.move(dst, self.tree_of[tool.label].files)


def _count(n: int) -> str:
    return f"{n // 1_000_000}M" if n % 1_000_000 == 0 else f"{n // 1000}k" if n >= 1000 else str(n)


def build_cases(ctx: Context) -> dict[str, list[Case]]:
    """Every case by its CLI name (jobs expands to one case per tree)."""
    specs = ctx.specs
    # Each speed case runs mirror with its compiled core and, beside it, with the pure-Python
    # one (MIRROR_PURE=1): the README gives both paths' figures.
    mirror, mirror_pure = (mirror_tool(ctx.mirror_jobs, "copy", "mirror", pure) for pure in (False, True))
    update, update_pure = (mirror_tool(ctx.mirror_jobs, ctx.update_command, "mirror", pure)
                           for pure in (False, True))
    anchors = [CP, RSYNC, TAR, COPYTREE]
    small, large, slow = specs["small"], specs["large"], specs["slowfs"]
    few, many, flat = specs["empty100k"], specs["empty1m"], specs["empty1m-flat"]
    big = specs["bigdir"]
    sync, sync_pure = (mirror_tool(ctx.mirror_jobs, "sync", "mirror sync", pure) for pure in (False, True))

    def tree_text(spec: trees.TreeSpec) -> str:
        unit, scale = ("MiB", trees.MIB) if spec.min_size >= trees.MIB else ("KiB", trees.KIB)
        sizes = (f"{spec.min_size // scale}-{spec.max_size // scale} {unit}"
                 if spec.min_size != spec.max_size else f"{spec.max_size // scale} {unit}")
        where = f" in {spec.folders:,} folders" if spec.folders > 1 else ""
        return f"{spec.files:,} files of {sizes}{where}"

    jobs = [mirror_tool(n, "copy") for n in (1, 2, 4, 8)]
    jobs_pairs = [(tool.label, "mirror -j1") for tool in jobs[1:]]
    slow_jobs = [mirror_tool(n, "copy") for n in (1, 4, 16, 32)]
    mem_tools = [(mirror_tool(ctx.mirror_jobs, "copy", f"mirror {_count(spec.files)}{suffix}"), key)
                 for key, spec, suffix in (("empty100k", few, ""), ("empty1m", many, ""),
                                           ("empty1m-flat", flat, " flat"))]
    lo, hi, hi_flat = (tool.label for tool, _key in mem_tools)
    big_text = f"{tree_text(big)} in one folder"
    from .remote import remote_cases        # here: bench.remote and bench.sparse build on Case
    from .sparse import sparse_cases        # from this module
    return {
        "small": [LoopCase(ctx, "small", f"first copy, {tree_text(small)}", "small",
                           [mirror, mirror_pure, *anchors],
                       [Target("mirror", "cp -a", 0.85, "mirror <= 0.85 x cp -a"),
                        Target("mirror", "rsync -a", 0.6, "mirror <= 0.6 x rsync -a")])],
        "large": [LoopCase(ctx, "large", f"first copy, {tree_text(large)}", "large",
                           [mirror, mirror_pure, *anchors],
                       [Target("mirror", "cp -a", 0.75, "mirror <= 0.75 x cp -a")], rounds=3)],
        "noop": [LoopUpToDate(ctx, "noop", f"up-to-date DST, {tree_text(small)}", "small",
                              [update, update_pure, RSYNC],
                          [Target("mirror", "rsync -a", 0.8, "mirror <= 0.8 x rsync -a")])],
        "touch1pct": [LoopTouch(ctx, "touch1pct", f"1% rewritten, {tree_text(small)}", "small",
                                [update, update_pure, RSYNC],
                            [Target("mirror", "rsync -a", 0.8, "mirror <= 0.8 x rsync -a")])],
        "jobs": [Case(ctx, "jobs-small", f"mirror --jobs, {tree_text(small)}", "small", jobs,
                      pairs=jobs_pairs),
                 Case(ctx, "jobs-large", f"mirror --jobs, {tree_text(large)}", "large", jobs,
                      pairs=jobs_pairs, rounds=3)],
        "slowfs": [SlowFs(ctx, "slowfs", f"FUSE +2 ms per lookup/getattr/open/create, "
                          f"{tree_text(slow)}", "slowfs", [*slow_jobs, CP, RSYNC],
                          [Target("mirror -j16", "mirror -j1", 1 / 8, "-j16 >= 8x faster than -j1"),
                           Target("mirror -j16", "cp -a", 0.1, "-j16 >= 10x faster than cp -a"),
                           Target("mirror -j16", "rsync -a", 0.1,
                                  "-j16 >= 10x faster than rsync -a"),
                           Target("mirror -j32", "mirror -j16", 1.0, "-j32 not slower than -j16")],
                          rounds=3)],
        "memory": [Memory(ctx, "memory", f"peak PSS (MiB) of all mirror processes, "
                          f"{few.files:,} and {many.files:,} empty files in {many.folders:,} "
                          f"folders, {flat.files:,} in one folder (flat)", mem_tools,
                          [Target(hi, None, 200.0, f"{hi}: total peak PSS <= 200 MB"),
                           Target(hi, lo, 1.5, f"{hi} <= 1.5 x {lo}"),
                           Target(hi_flat, None, 200.0, f"{hi_flat}: total peak PSS <= 200 MB")],
                          pairs=[(hi_flat, hi)])],
        "bigdir": [LoopCase(ctx, "bigdir", f"first copy, {big_text}", "bigdir", [mirror, mirror_pure, CP, RSYNC],
                            [Target("mirror", "cp -a", 1.0, "mirror <= 1.0 x cp -a")])],
        "bigdir-noop": [LoopUpToDate(ctx, "bigdir-noop", f"up-to-date DST, {big_text}", "bigdir",
                                     [sync, sync_pure, RSYNC], [Target("mirror sync", "rsync -a", 0.8,
                                                            "mirror sync <= 0.8 x rsync -a")])],
        "bigdir-delete": [Pruned(ctx, "bigdir-delete", f"half of SRC deleted, DST a full copy, "
                                 f"{big_text}", "bigdir", [sync, sync_pure, RSYNC_DELETE])],
        "sparse": sparse_cases(ctx),
        "remote": remote_cases(ctx),
        "mpi": mpi_cases(ctx),
    }


CASE_NAMES = ("small", "large", "noop", "touch1pct", "jobs", "slowfs", "memory", "sparse", "remote", "mpi",
              "bigdir", "bigdir-noop", "bigdir-delete")


# The mpi case: mirror on the ranks of an MPI job against the local Pool with as many workers.

def mpiexec() -> str | None:
    """The mpiexec of this Python's environment (the mpich wheel puts it beside python), else PATH's."""
    beside = Path(sys.executable).parent / "mpiexec"
    return str(beside) if beside.exists() else shutil.which("mpiexec")


def mpi_missing() -> str | None:
    if importlib.util.find_spec("mpi4py") is None or mpiexec() is None:
        return "needs mpi4py and an mpiexec: pip install mpich mpi4py"
    return None


def mpi_tool(ranks: int) -> Tool:
    """mpiexec -n RANKS python -m mpi4py.futures -m mirror copy SRC DST --engine mpi: rank 0
    hands out the work, RANKS - 1 ranks do it."""

    def argv(src: Path, dst: Path) -> list[str]:
        return [str(mpiexec()), "-n", str(ranks), sys.executable, "-m", "mpi4py.futures", "-m",
                "mirror", "copy", str(src), str(dst), "--no-progress", "--quiet", "--engine", "mpi"]

    return Tool(f"mpi -n {ranks}", argv, is_mirror=True)


class OnRanks:
    """Contenders launched by mpiexec need mpi4py and an mpiexec; without them they are skipped."""

    def unavailable(self, tool: Tool) -> str | None:
        if tool.label.startswith("mpi "):
            return mpi_missing() or super().unavailable(tool)
        return super().unavailable(tool)


class RanksCase(OnRanks, Case):
    pass


class RanksSlowFs(OnRanks, SlowFs):
    pass


def mpi_cases(ctx: Context) -> list[Case]:
    """`-n 2` and `-n 3` (one and two worker ranks) against the Pool's -j1 and -j2, on `small` and
    `slowfs`; on slowfs also -n 9 against -j8, a ratio without a target: more ranks overlap more
    waits, but 9 interpreters start, and idle ranks poll, on 2 cores."""
    small, slow = ctx.specs["small"], ctx.specs["slowfs"]
    pool = [mirror_tool(jobs, "copy") for jobs in (1, 2)]
    ranks = [mpi_tool(n) for n in (2, 3)]
    pairs = [("mpi -n 2", "mirror -j1"), ("mpi -n 3", "mirror -j2")]
    same = Target("mpi -n 3", "mirror -j2", 1.1, "mpi -n 3 <= 1.1 x mirror -j2 (MPI start-up included)")
    return [
        RanksCase(ctx, "mpi-small", f"MPI ranks vs the Pool, first copy, {small.files:,} files of "
                  f"{small.min_size // 1024}-{small.max_size // 1024} KiB in {small.folders:,} folders",
                  "small", [*pool, *ranks], [same], pairs=pairs, rounds=3),
        RanksSlowFs(ctx, "mpi-slowfs", f"MPI ranks vs the Pool, FUSE +2 ms per lookup/getattr/open/"
                    f"create, {slow.files:,} files of {slow.max_size // 1024} KiB",
                    "slowfs", [*pool, mirror_tool(8, "copy"), *ranks, mpi_tool(9)],
                    [same],
                    pairs=[*pairs, ("mpi -n 9", "mirror -j8")], rounds=3),
    ]
