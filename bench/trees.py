"""Deterministic source trees (seeded content), built once and reused, plus 1% rewrites."""
from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator

KIB = 1024
MIB = 1024 * KIB
POOL_SIZE = 16 * MIB          # random bytes that every file's content is sliced from
CHUNK = 1 * MIB               # write unit for big files


@dataclass(frozen=True)
class TreeSpec:
    """What a source tree holds: `files` files of min_size..max_size bytes in `folders` folders."""

    name: str
    files: int
    folders: int
    min_size: int
    max_size: int
    seed: int = 1

    @property
    def dirname(self) -> str:
        return f"{self.name}-{self.files}f-{self.folders}d-{self.min_size}-{self.max_size}"

    def approx_bytes(self) -> int:
        """Rough on-disk size of one copy, for free-space checks."""
        per_file = (self.min_size + self.max_size) // 2
        blocks = -(-per_file // (4 * KIB)) * 4 * KIB
        return self.files * max(blocks, 256) + self.folders * 4 * KIB


def tree_specs(quick: bool) -> dict[str, TreeSpec]:
    """The trees the cases use; --quick shrinks each ~10-50x."""
    if quick:
        return {
            "small": TreeSpec("small", 2_000, 20, 1 * KIB, 8 * KIB),
            "large": TreeSpec("large", 8, 1, 16 * MIB, 16 * MIB),
            "slowfs": TreeSpec("slowfs", 32, 2, 16 * KIB, 16 * KIB),
            "empty100k": TreeSpec("empty", 2_000, 2, 0, 0),
            "empty1m": TreeSpec("empty", 20_000, 20, 0, 0),
            "empty1m-flat": TreeSpec("empty", 20_000, 1, 0, 0),
            "bigdir": TreeSpec("bigdir", 4_000, 1, 1 * KIB, 8 * KIB),
            "remote-files": TreeSpec("rfiles", 500, 10, 4 * KIB, 64 * KIB),
            "remote-big": TreeSpec("rbig", 2, 1, 16 * MIB, 16 * MIB),
        }
    return {
        "small": TreeSpec("small", 100_000, 1_000, 1 * KIB, 8 * KIB),
        "large": TreeSpec("large", 8, 1, 512 * MIB, 512 * MIB),
        "slowfs": TreeSpec("slowfs", 1_000, 100, 16 * KIB, 16 * KIB),
        "empty100k": TreeSpec("empty", 100_000, 100, 0, 0),
        "empty1m": TreeSpec("empty", 1_000_000, 1_000, 0, 0),
        "empty1m-flat": TreeSpec("empty", 1_000_000, 1, 0, 0),
        "bigdir": TreeSpec("bigdir", 200_000, 1, 1 * KIB, 8 * KIB),
        "remote-files": TreeSpec("rfiles", 10_000, 100, 4 * KIB, 64 * KIB),
        "remote-big": TreeSpec("rbig", 2, 1, 256 * MIB, 256 * MIB),
    }


def _pool(seed: int) -> bytes:
    return random.Random(seed).randbytes(POOL_SIZE + CHUNK)


def _file_params(spec: TreeSpec, index: int, version: int) -> tuple[int, int]:
    """(size, pool offset) of file `index`; the size never depends on the version."""
    digest = hashlib.blake2b(f"{spec.seed}:{index}".encode(), digest_size=16).digest()
    span = spec.max_size - spec.min_size
    size = spec.min_size + (int.from_bytes(digest[:8], "little") % (span + 1) if span else 0)
    offset = (int.from_bytes(digest[8:], "little") + version * 7919) % POOL_SIZE
    return size, offset


def file_relpath(spec: TreeSpec, index: int) -> str:
    per_folder = -(-spec.files // spec.folders)
    return f"d{index // per_folder:04d}/f{index:07d}.bin"


def iter_relpaths(spec: TreeSpec) -> Iterator[tuple[int, str]]:
    for index in range(spec.files):
        yield index, file_relpath(spec, index)


def _write_file(path: str, spec: TreeSpec, index: int, version: int, pool: bytes) -> None:
    size, offset = _file_params(spec, index, version)
    view = memoryview(pool)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        written = 0
        while written < size:
            n = min(CHUNK, size - written)
            start = (offset + written * 31) % POOL_SIZE   # big files: each chunk a new slice
            os.write(fd, view[start:start + n])
            written += n
    finally:
        os.close(fd)


def build_tree(spec: TreeSpec, root: Path, trash_move) -> Path:
    """Build `spec` under root/src once; later calls reuse it when its stamp matches."""
    src_root = root / "src"
    src_root.mkdir(parents=True, exist_ok=True)
    path = src_root / spec.dirname
    stamp = src_root / f"{spec.dirname}.json"
    if path.is_dir() and stamp.is_file() and json.loads(stamp.read_text()) == asdict(spec):
        return path
    if path.exists():
        trash_move(path)            # a partial tree from an interrupted build
    stamp.unlink(missing_ok=True)
    started = time.perf_counter()
    print(f"  building {spec.dirname} ({spec.files:,} files) ...", flush=True)
    pool = _pool(spec.seed)
    made: set[str] = set()
    for index, rel in iter_relpaths(spec):
        folder = rel.rsplit("/", 1)[0]
        if folder not in made:
            (path / folder).mkdir(parents=True, exist_ok=True)
            made.add(folder)
        _write_file(str(path / rel), spec, index, 0, pool)
    stamp.write_text(json.dumps(asdict(spec)))
    print(f"  built {spec.dirname} in {time.perf_counter() - started:.1f} s", flush=True)
    return path


def pick(spec: TreeSpec, fraction: float, salt: int) -> list[int]:
    """A fixed, seeded choice of `fraction` of the tree's file indices (at least one), sorted;
    another salt picks another set."""
    count = max(1, int(spec.files * fraction))
    return sorted(random.Random(spec.seed + salt).sample(range(spec.files), count))


class Rewriter:
    """Rewrites a fixed 1% of a tree's files in place with alternating content and new mtimes."""

    def __init__(self, spec: TreeSpec, path: Path, fraction: float = 0.01) -> None:
        self.spec = spec
        self.path = path
        self.indices = pick(spec, fraction, salt=1)
        self.version = 0
        self._pool = _pool(spec.seed)
        self._last_mtime = 0

    @property
    def relpaths(self) -> list[str]:
        return [file_relpath(self.spec, i) for i in self.indices]

    def flip(self) -> None:
        """Switch the chosen files to the other content, each with a fresh whole-second mtime."""
        self.version = 1 - self.version
        mtime = max(int(time.time()), self._last_mtime + 1)
        self._last_mtime = mtime
        for index in self.indices:
            target = str(self.path / file_relpath(self.spec, index))
            _write_file(target, self.spec, index, self.version, self._pool)
            os.utime(target, ns=(mtime * 10**9, mtime * 10**9))

    def restore(self) -> None:
        """Leave the tree with its original content (mtimes stay new)."""
        if self.version != 0:
            self.flip()


def copy_files(src: Path, dst: Path, relpaths: list[str]) -> None:
    """Copy only relpaths of src into dst, with their modes and mtimes; the folders they are in
    get src's modes and mtimes too, set after their files."""
    folders: set[str] = set()
    for rel in relpaths:
        folder = os.path.dirname(rel)
        if folder not in folders:
            (dst / folder).mkdir(parents=True, exist_ok=True)
            folders.add(folder)
        shutil.copy2(src / rel, dst / rel, follow_symlinks=False)
    for folder in sorted(folders | {""}, key=len, reverse=True):
        shutil.copystat(src / folder, dst / folder, follow_symlinks=False)


def tree_summary(path: Path) -> tuple[int, int, int]:
    """(files, folders, bytes) under path, without following symlinks."""
    files = folders = size = 0
    stack = [str(path)]
    while stack:
        with os.scandir(stack.pop()) as entries:
            for entry in entries:
                if entry.is_dir(follow_symlinks=False):
                    folders += 1
                    stack.append(entry.path)
                else:
                    files += 1
                    size += entry.stat(follow_symlinks=False).st_size
    return files, folders, size


def same_files(src: Path, dst: Path, relpaths: list[str]) -> bool:
    """True when each of relpaths has the same bytes and mtime on both sides."""
    for rel in relpaths:
        a, b = src / rel, dst / rel
        if a.read_bytes() != b.read_bytes() or a.stat().st_mtime_ns != b.stat().st_mtime_ns:
            return False
    return True


def warm(path: Path) -> None:
    """Read every file once so the first timed tool does not pay for a cold page cache."""
    buf = bytearray(CHUNK)
    for folder, _dirs, files in os.walk(path):
        for name in files:
            with open(os.path.join(folder, name), "rb", buffering=0) as handle:
                while handle.readinto(buf):
                    pass
