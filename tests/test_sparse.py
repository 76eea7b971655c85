"""Sparse files: only the data is copied, the holes stay holes, and the size is exact."""
from __future__ import annotations

import errno
import os
import random

import pytest

from conftest import snapshot
from mirror.run import fastcopy
from mirror.run.fastcopy import BIG_FILE, Copier, copy_sparse

KIB, MIB, GIB = 1 << 10, 1 << 20, 1 << 30


def reports_holes(folder) -> str | None:
    """None if the filesystem of `folder` says where a file's holes are; else why not."""
    probe = os.path.join(folder, ".hole-probe")
    try:
        with open(probe, "wb") as out:
            out.truncate(4 * MIB)
            out.seek(2 * MIB)
            out.write(b"x" * 4096)
            out.flush()
            os.fsync(out.fileno())
            if os.lseek(out.fileno(), 0, os.SEEK_DATA) != 2 * MIB:
                return "the filesystem of tmp_path does not report holes (SEEK_DATA)"
    except OSError as error:
        return f"the filesystem of tmp_path does not report holes: {error}"
    finally:
        if os.path.exists(probe):
            os.unlink(probe)
    return None


@pytest.fixture
def holes(tmp_path):
    reason = reports_holes(tmp_path)
    if reason:
        pytest.skip(reason)
    return tmp_path


def sparse_file(path, size: int, extents: list[tuple[int, bytes]]) -> None:
    """A file of `size` bytes with data only at the given (offset, bytes) extents."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as out:
        out.truncate(size)
        for offset, data in extents:
            out.seek(offset)
            out.write(data)


def used(path) -> int:
    """Bytes of disk the file takes."""
    return os.stat(path).st_blocks * 512


def data_ranges(path) -> list[tuple[int, int]]:
    """(start, stop) of every data extent, as SEEK_DATA and SEEK_HOLE give them."""
    ranges, offset = [], 0
    with open(path, "rb") as stream:
        fd, size = stream.fileno(), os.fstat(stream.fileno()).st_size
        while offset < size:
            try:
                start = os.lseek(fd, offset, os.SEEK_DATA)
            except OSError as error:
                assert error.errno == errno.ENXIO
                break
            offset = os.lseek(fd, start, os.SEEK_HOLE)
            ranges.append((start, offset))
    return ranges


def same_bytes(a, b) -> bool:
    """Both files read the same, byte for byte, without reading their holes: whatever is
    outside both files' data extents is a hole in both, and reads as zeros in both."""
    if os.stat(a).st_size != os.stat(b).st_size:
        return False
    with open(a, "rb") as one, open(b, "rb") as two:
        for start, stop in data_ranges(a) + data_ranges(b):
            if os.pread(one.fileno(), stop - start, start) != os.pread(two.fileno(), stop - start, start):
                return False
    return True


def vm_image(path, size: int = 256 * MIB, seed: int = 10) -> None:
    """A disk image as a VM leaves it (`size` of 64 MiB or more): a boot sector, 24 blocks
    scattered over its first half, a run of BIG_FILE bytes (blocks reserved for it alone) in
    its second half, and a last block at the very end."""
    rng = random.Random(seed)
    extents = [(0, rng.randbytes(64 * KIB)), (size // 2, rng.randbytes(BIG_FILE + 4 * KIB))]
    for slot in rng.sample(range(1, size // MIB // 2), 24):  # one a MiB: never touching
        offset = slot * MIB + rng.randrange(0, 192) * 4 * KIB
        extents.append((offset, rng.randbytes(rng.randrange(1, 64) * 4 * KIB)))
    extents.append((size - 4 * KIB, rng.randbytes(4 * KIB)))
    sparse_file(path, size, extents)


def test_a_2gib_file_with_4kib_of_data_takes_4kib_in_dst(cli, holes):
    src, dst = holes / "src", holes / "dst"
    sparse_file(src / "disk.img", 2 * GIB, [(GIB, os.urandom(4 * KIB))])

    result = cli("copy", src, dst, "--no-progress")

    assert result.exit_code == 0, result.output
    assert used(dst / "disk.img") <= 64 * KIB  # not 2 GiB
    assert same_bytes(src / "disk.img", dst / "disk.img")


def test_a_file_ending_in_a_hole_keeps_its_exact_size(cli, holes):
    src, dst = holes / "src", holes / "dst"
    size = 64 * MIB + 123
    sparse_file(src / "log", size, [(0, os.urandom(MIB))])

    result = cli("copy", src, dst, "--no-progress")

    assert result.exit_code == 0, result.output
    assert os.stat(dst / "log").st_size == size
    assert used(dst / "log") <= MIB + 64 * KIB  # its tail is a hole, not written zeros
    assert same_bytes(src / "log", dst / "log")


def test_a_vm_image_with_scattered_data_keeps_its_holes(cli, holes):
    src, dst = holes / "src", holes / "dst"
    vm_image(src / "vm/disk.img")
    sparse_file(src / "vm/nvram", 1 * MIB, [(0, os.urandom(8 * KIB)), (512 * KIB, os.urandom(4 * KIB))])

    result = cli("copy", src, dst, "--no-progress")

    assert result.exit_code == 0, result.output
    for name in ("vm/disk.img", "vm/nvram"):  # a big file (its own task) and a batched one
        assert data_ranges(dst / name) == data_ranges(src / name)
        assert used(dst / name) <= used(src / name) + 64 * KIB
        assert same_bytes(src / name, dst / name)
        assert os.stat(dst / name).st_mtime_ns == os.stat(src / name).st_mtime_ns


def test_no_sparse_writes_every_byte(cli, holes):
    src = holes / "src"
    sparse_file(src / "disk.img", 64 * MIB, [(32 * MIB, os.urandom(4 * KIB))])

    kept = cli("copy", src, holes / "kept", "--no-progress")
    filled = cli("copy", src, holes / "filled", "--no-progress", "--no-sparse")

    assert kept.exit_code == 0 and filled.exit_code == 0, kept.output + filled.output
    assert used(holes / "kept/disk.img") <= 64 * KIB
    assert used(holes / "filled/disk.img") >= 64 * MIB
    assert data_ranges(holes / "filled/disk.img") == [(0, 64 * MIB)]
    assert same_bytes(src / "disk.img", holes / "filled/disk.img")


def test_dense_files_are_copied_as_before(cli, holes):
    # Holes are kept, zeros are not looked for (as cp's default): a file of written zeros
    # stays written, whatever its size. Passes on the code before sparse copying too: it
    # guards what must not change.
    src, dst = holes / "src", holes / "dst"
    sizes = {"tiny": 100, "small": 4 * KIB, "edge": fastcopy.SPARSE_MIN, "medium": MIB + 1,
             "big": BIG_FILE + 5}
    for name, size in sizes.items():
        (src / "dense").mkdir(parents=True, exist_ok=True)
        (src / "dense" / name).write_bytes(os.urandom(size))
    (src / "zeros").write_bytes(bytes(2 * MIB))
    os.sync()  # written blocks, not delayed allocations

    result = cli("copy", src, dst, "--no-progress")

    assert result.exit_code == 0, result.output
    for name, size in sizes.items():
        assert used(dst / "dense" / name) >= size
    assert used(dst / "zeros") >= 2 * MIB
    assert snapshot(dst) == snapshot(src)


def test_check_finds_a_sparse_copy_identical_and_sync_has_nothing_to_do(cli, holes):
    src, dst = holes / "src", holes / "dst"
    vm_image(src / "disk.img", size=64 * MIB)
    sparse_file(src / "empty-disk.img", 256 * MIB, [])  # all hole

    copied = cli("copy", src, dst, "--no-progress")
    checked = cli("check", src, dst, "--checksum")
    again = cli("sync", src, dst, "--no-progress", "--json")

    assert copied.exit_code == 0, copied.output
    assert used(dst / "empty-disk.img") == 0
    assert used(dst / "disk.img") <= used(src / "disk.img") + 64 * KIB
    assert checked.exit_code == 0 and "identical" in checked.output, checked.output
    assert again.exit_code == 0 and '"files_copied": 0' in again.output, again.output


def test_where_the_filesystem_cannot_say_the_file_is_copied_whole(holes, monkeypatch):
    src, dst = holes / "src", holes / "dst"
    sparse_file(src, 4 * MIB, [(MIB, os.urandom(4 * KIB))])
    real_lseek = os.lseek

    def lseek(fd, offset, whence):
        if whence in (os.SEEK_DATA, os.SEEK_HOLE):
            raise OSError(errno.EINVAL, "Invalid argument")
        return real_lseek(fd, offset, whence)
    monkeypatch.setattr(fastcopy.os, "lseek", lseek)
    with open(src, "rb") as source, open(dst, "wb") as out:
        copied = Copier(os.fsencode(holes))(source.fileno(), out.fileno(), 4 * MIB, lambda n: None)
    monkeypatch.undo()

    assert copied == 4 * MIB
    assert used(dst) >= 4 * MIB  # every byte written
    assert same_bytes(src, dst)


def test_a_sparse_file_that_shrank_is_copied_short_with_no_zeros_past_its_end(holes):
    src, dst = holes / "src", holes / "dst"
    data = os.urandom(4 * KIB)
    sparse_file(src, 2 * MIB, [(MIB, data)])  # 4 MiB when it was listed
    progress = []
    with open(src, "rb") as source, open(dst, "wb") as out:
        copied = copy_sparse(source.fileno(), out.fileno(), 4 * MIB, progress.append,
                             Copier(os.fsencode(holes)).copy_extent, reserve=False)

    assert copied == os.stat(dst).st_size == 2 * MIB
    assert sum(progress) == MIB + 4 * KIB  # the hole it passed and the data; not the tail
    assert same_bytes(src, dst)
