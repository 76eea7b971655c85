"""Hostile trees: links planted in DST, folders swapped for links mid-run, private files, long paths."""
from __future__ import annotations

import os
import stat

import pytest

from conftest import File, Link
from mirror import Options, copy_tree, sync_tree
from mirror.model import Action, Mode, Op, Reason, Status
from mirror.plan.scan import entry_from_stat
from mirror.run.apply import Applier


def test_dst_links_where_src_has_real_entries_are_replaced_not_followed(make_tree):
    outside = make_tree({"victim.txt": b"untouched", "victim-dir/keep": b"k"})
    src = make_tree({"victim.txt": b"from src", "victim-dir/new": b"n"})
    dst = make_tree({"victim.txt": Link(str(outside / "victim.txt")),
                     "victim-dir": Link(str(outside / "victim-dir"))})

    report = sync_tree(src, dst, Options(jobs=2))

    assert report.exit_code == 0, report.errors
    assert not os.path.islink(dst / "victim.txt") and not os.path.islink(dst / "victim-dir")
    assert (dst / "victim.txt").read_bytes() == b"from src"
    assert (outside / "victim.txt").read_bytes() == b"untouched"
    assert sorted(os.listdir(outside / "victim-dir")) == ["keep"]


def test_a_folder_swapped_for_a_link_mid_run_cannot_redirect_writes(make_tree):
    outside = make_tree({})
    src = make_tree({"sub/file": b"payload"})
    dst = make_tree({})
    entry = entry_from_stat(b"sub/file", os.lstat(src / "sub/file"))
    action = Action(Op.COPY, b"sub/file", Reason.MISSING, entry)  # planned: DST/sub is a folder
    os.symlink(outside, dst / "sub")  # the race: it became a link before the copy

    applier = Applier(os.fsencode(src), os.fsencode(dst), Mode.COPY, Options(jobs=1))
    try:
        outcome = applier.apply(action)
    finally:
        applier.close()

    assert outcome.status is Status.FAILED
    assert os.listdir(outside) == []


@pytest.mark.parametrize("replacing", [False, True])
def test_files_being_written_are_private(make_tree, replacing):
    """A replacement is written under a hidden name with mode 0600; a new file is an inode
    with no name at all (nobody else can open it) until it is complete."""
    src = make_tree({"secret": File(b"s" * 1000, mode=0o644)})
    dst = make_tree({"secret": b"old"} if replacing else {})
    seen = []
    applier = Applier(os.fsencode(src), os.fsencode(dst), Mode.COPY, Options(jobs=1))
    real_copy = applier.files.copy_bytes

    def spy(src_fd, dst_fd, size, on_bytes):
        st = os.fstat(dst_fd)
        seen.append((stat.S_IMODE(st.st_mode), st.st_nlink, len(os.listdir(dst))))
        return real_copy(src_fd, dst_fd, size, on_bytes)

    applier.files.copy_bytes = spy
    entry = entry_from_stat(b"secret", os.lstat(src / "secret"))
    old = entry_from_stat(b"secret", os.lstat(dst / "secret")) if replacing else None
    try:
        action = Action(Op.COPY, b"secret", Reason.SIZE if replacing else Reason.MISSING, entry, old)
        assert applier.apply(action).status is Status.DONE
    finally:
        applier.close()

    if replacing:
        assert seen == [(0o600, 1, 2)]   # beside the old version, private
    else:
        [(_, links, names)] = seen
        assert links == 0 and names == 0  # no name to open it by
    assert stat.S_IMODE(os.stat(dst / "secret").st_mode) == 0o644
    assert (dst / "secret").read_bytes() == b"s" * 1000


def test_setuid_is_kept_only_with_the_owner(make_tree, tmp_path):
    src = make_tree({"tool": File(b"x", mode=0o4755), "group-tool": File(b"y", mode=0o2750)})

    copy_tree(src, tmp_path / "no-owner", Options(jobs=1, owner=False))

    assert stat.S_IMODE(os.stat(tmp_path / "no-owner/tool").st_mode) == 0o755
    assert stat.S_IMODE(os.stat(tmp_path / "no-owner/group-tool").st_mode) == 0o750
    if os.geteuid() == 0:
        copy_tree(src, tmp_path / "owner", Options(jobs=1, owner=True))
        assert stat.S_IMODE(os.stat(tmp_path / "owner/tool").st_mode) == 0o4755
    again = copy_tree(src, tmp_path / "no-owner", Options(jobs=1, owner=False))
    assert again.metadata_updated == 0, "the masked bits are not a difference"


def make_long_tree(root: bytes, depth: int, name: bytes) -> None:
    """A chain of folders whose full path is longer than PATH_MAX, made with relative opens."""
    os.mkdir(root)
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    for _ in range(depth):
        os.mkdir(name, dir_fd=fd)
        child = os.open(name, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
        os.close(fd)
        fd = child
    leaf = os.open(b"leaf", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd)
    os.write(leaf, b"far away")
    os.close(leaf)
    os.close(fd)


def read_long_leaf(root: bytes, depth: int, name: bytes) -> bytes:
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    for _ in range(depth):
        child = os.open(name, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
        os.close(fd)
        fd = child
    leaf = os.open(b"leaf", os.O_RDONLY, dir_fd=fd)
    os.close(fd)
    try:
        return os.read(leaf, 100)
    finally:
        os.close(leaf)


def remove_long_tree(root: bytes) -> None:
    import subprocess
    subprocess.run(["rm", "-rf", root], check=True)


def test_paths_longer_than_path_max_and_255_byte_names(tmp_path):
    name, depth = b"n" * 255, 20   # 20 x 256 bytes: well past PATH_MAX (4096)
    src, dst = os.fsencode(tmp_path / "src"), os.fsencode(tmp_path / "dst")
    make_long_tree(src, depth, name)
    try:
        report = sync_tree(src, dst, Options(jobs=2))

        assert report.exit_code == 0, report.errors
        assert report.files_copied == 1 and report.dirs_created == depth + 1
        assert read_long_leaf(dst, depth, name) == b"far away"
        assert sync_tree(src, dst, Options(jobs=2)).files_copied == 0
    finally:
        remove_long_tree(src)
        remove_long_tree(dst)


def test_making_a_folder_that_is_already_there_succeeds(make_tree):
    """A folder task run again (its worker died) finds its folder made: that is not an error."""
    src = make_tree({"sub/f": b"x"})
    dst = make_tree({})
    os.mkdir(dst / "sub")
    entry = entry_from_stat(b"sub", os.lstat(src / "sub"))
    applier = Applier(os.fsencode(src), os.fsencode(dst), Mode.COPY, Options(jobs=1))
    try:
        assert applier.apply(Action(Op.MKDIR, b"sub", Reason.MISSING, entry)).status is Status.DONE
        (dst / "file").write_bytes(b"a file is in the way")
        file_entry = entry_from_stat(b"file", os.lstat(src / "sub"))
        assert applier.apply(Action(Op.MKDIR, b"file", Reason.MISSING, file_entry)).status is Status.FAILED
    finally:
        applier.close()
