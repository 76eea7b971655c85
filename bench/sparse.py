"""The sparse case: one disk image with 1% data in 64 extents, copied on a fresh ext4 of its own."""
from __future__ import annotations

import errno
import os
import random
import shutil
import statistics
import subprocess
from pathlib import Path

from .cases import Case, Context
from .loopfs import LoopFs
from .runner import CaseResult, Check, Measurement, SkipCase, Target, Trash, slug, timed_run
from .tools import CP, Tool, mirror_missing, mirror_tool, rsync_missing

KIB, MIB, GIB = 1 << 10, 1 << 20, 1 << 30
IMAGE_SIZE, QUICK_IMAGE_SIZE = 4 * GIB, 256 * MIB
EXTENTS = 64
DATA_FRACTION = 0.01
BLOCK = 4 * KIB
FS_SIZE = 16 * GIB           # the loop filesystem (a sparse image: only what is written is used)
EAGER_DELETE = GIB           # a copy that filled its holes is deleted at once, not trashed

RSYNC_SPARSE = Tool("rsync -aS", lambda src, dst: ["rsync", "-aS", f"{src}/", f"{dst}/"])


def make_image(path: Path, size: int, seed: int = 1) -> int:
    """A `size`-byte file with DATA_FRACTION of it as data, in EXTENTS block-aligned extents of
    seeded random bytes, one somewhere in each 1/EXTENTS of the file; the rest is holes (the
    last one runs to the end). Returns the bytes of data."""
    per_extent = int(size * DATA_FRACTION) // EXTENTS // BLOCK * BLOCK
    stride = size // EXTENTS
    rng = random.Random(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as out:
        out.truncate(size)
        for index in range(EXTENTS):
            offset = index * stride + rng.randrange((stride - per_extent) // BLOCK) * BLOCK
            os.pwrite(out.fileno(), rng.randbytes(per_extent), offset)
    return per_extent * EXTENTS


def data_ranges(fd: int) -> list[tuple[int, int]]:
    """(start, stop) of every data extent of an open file, by SEEK_DATA and SEEK_HOLE."""
    ranges, offset, size = [], 0, os.fstat(fd).st_size
    while offset < size:
        try:
            start = os.lseek(fd, offset, os.SEEK_DATA)
        except OSError as error:
            if error.errno == errno.ENXIO:
                break
            raise
        offset = os.lseek(fd, start, os.SEEK_HOLE)
        ranges.append((start, offset))
    return ranges


def same_content(a: Path, b: Path) -> str | None:
    """None when both files read the same (holes read as zeros; only data extents are read)
    and share their mtime; else what differs."""
    sa, sb = a.stat(), b.stat()
    if (sa.st_size, sa.st_mtime_ns) != (sb.st_size, sb.st_mtime_ns):
        return (f"(size, mtime_ns) {(sb.st_size, sb.st_mtime_ns)} != source "
                f"{(sa.st_size, sa.st_mtime_ns)}")
    with open(a, "rb", buffering=0) as one, open(b, "rb", buffering=0) as two:
        for start, stop in data_ranges(one.fileno()) + data_ranges(two.fileno()):
            for offset in range(start, stop, 8 * MIB):
                count = min(8 * MIB, stop - offset)
                if os.pread(one.fileno(), count, offset) != os.pread(two.fileno(), count, offset):
                    return f"bytes differ at {offset:,}..{offset + count:,}"
    return None


def used_bytes(path: Path) -> int:
    """Disk space (st_blocks) of the regular files under path."""
    total = 0
    for folder, _dirs, files in os.walk(path):
        for name in files:
            total += os.lstat(os.path.join(folder, name)).st_blocks * 512
    return total


class Sparse(Case):
    """First copy of one sparse disk image into a fresh DST per tool and round; besides the
    time, each run's DST blocks (`extra["dst_used_mib"]`) and, in the notes, their medians."""

    def __init__(self, ctx: Context, name: str, tools: list[Tool], rounds: int = 3) -> None:
        self.ctx, self.name, self.tools, self.default_rounds = ctx, name, tools, rounds
        self.size = QUICK_IMAGE_SIZE if ctx.quick else IMAGE_SIZE
        self.description = (f"first copy, one {self.size // MIB:,} MiB image with "
                            f"{DATA_FRACTION:.0%} data in {EXTENTS} extents")
        self._targets = [Target("mirror", None, 1.0, "mirror <= 1 s")]
        self._pairs = None
        self.fs: LoopFs | None = None
        self.notes: list[str] = []

    def unavailable(self, tool: Tool) -> str | None:
        if tool is RSYNC_SPARSE:
            return rsync_missing()
        return mirror_missing() if tool.is_mirror else None

    def setup(self, tools: list[Tool]) -> None:
        self.fs = LoopFs(self.ctx.data, self.name, FS_SIZE, inodes=1024)
        if self.fs.mounted:
            root = self.fs.root
            self.notes.append("SRC and DST on a fresh ext4 (no journal), loop-mounted for the case")
        else:
            root = self.ctx.data / self.name
            self.notes.append(f"not on a fresh loop filesystem: {self.fs.problem}")
        self.trash = Trash(root / "trash")
        self.src = root / "src"
        self.dst_root = root / "dst"
        self.dst_root.mkdir(parents=True, exist_ok=True)
        image = self.src / "disk.img"
        if image.exists():
            self.trash.move(self.src)          # from an interrupted run without a loop mount
        data = make_image(image, self.size)
        self.src_used = used_bytes(self.src)
        self.notes.append(f"SRC: {self.size // MIB:,} MiB apparent, {data / MIB:.1f} MiB of data, "
                          f"{self.src_used / MIB:.1f} MiB of blocks")
        if self.ctx.warmup:   # the data only: reading holes would fill the cache with zeros
            with open(image, "rb", buffering=0) as stream:
                for start, stop in data_ranges(stream.fileno()):
                    os.pread(stream.fileno(), stop - start, start)
        if shutil.disk_usage(root).free < 2 * self.size:   # room for a copy that fills its holes
            raise SkipCase(f"less than {2 * self.size / GIB:.1f} GiB free in {root}")

    def prepare(self, tool: Tool, rnd: int) -> tuple[Path, Path]:
        dst = self.dst_root / f"{slug(tool.label)}-r{rnd}"
        self.trash.move(dst)
        return self.src, dst

    def run(self, tool: Tool, src: Path, dst: Path, rnd: int) -> Measurement:
        measurement = timed_run(tool, src, dst, rnd)
        if dst.exists():
            measurement.extra["dst_used_mib"] = used_bytes(dst) / MIB
        return measurement

    def verify(self, tool: Tool, src: Path, dst: Path, rnd: int) -> str | None:
        """Every round: the image reads the same in DST (and has SRC's size and mtime)."""
        if not (dst / "disk.img").is_file():
            return "no disk.img in DST"
        return same_content(src / "disk.img", dst / "disk.img")

    def after(self, tool: Tool, rnd: int, dst: Path) -> None:
        if dst.exists() and used_bytes(dst) > EAGER_DELETE:
            subprocess.run(["rm", "-rf", str(dst)], check=False)
        else:
            self.trash.move(dst, 1)

    def teardown(self, result: CaseResult) -> None:
        used = {}
        for label in result.labels:
            values = [m.extra["dst_used_mib"] for m in result.measurements
                      if m.label == label and "dst_used_mib" in m.extra]
            if values:
                used[label] = statistics.median(values)
        if used:
            shown = ", ".join(f"{label} {mib:,.1f}" for label, mib in used.items())
            result.notes.append(f"DST blocks, median MiB: {shown} (SRC {self.src_used / MIB:,.1f})")
        if "mirror" in used and self.src_used:
            ratio = used["mirror"] * MIB / self.src_used
            result.checks.append(Check("mirror DST blocks <= 1.05 x SRC's", ratio, 1.05,
                                       ratio <= 1.05))
        result.notes.extend(self.notes)
        if hasattr(self, "trash"):
            self.trash.empty()
        if self.fs is not None:
            self.fs.close()


def sparse_cases(ctx: Context) -> list[Case]:
    mirror = mirror_tool(ctx.mirror_jobs, "copy", label="mirror")
    return [Sparse(ctx, "sparse", [mirror, CP, RSYNC_SPARSE])]
