"""How one file reaches its name in DST: anonymous for new files, a hidden name otherwise."""
from __future__ import annotations

import errno
import os
import stat
import struct

import pytest

from conftest import File, needs_root, snapshot, temp_files
from mirror.model import Action, Mode, Op, Reason, Status
from mirror.options import Options
from mirror.plan.scan import entry_from_stat
from mirror.run import copyfile
from mirror.run.apply import Applier


def copy_one(src, dst, name: str, while_writing=lambda: None, after_listing=lambda: None,
             on_bytes=lambda nbytes: None):
    """Copy src/name to dst/name with one Applier: after_listing() runs between the lstat of
    the listing and the copy, while_writing() mid-copy."""
    os.makedirs(dst, exist_ok=True)
    applier = Applier(os.fsencode(src), os.fsencode(dst), Mode.COPY, Options(jobs=1),
                      on_bytes=on_bytes)
    write = applier.files.copy_bytes

    def copy_bytes(src_fd, dst_fd, size, on_bytes):
        while_writing()
        return write(src_fd, dst_fd, size, on_bytes)
    applier.files.copy_bytes = copy_bytes
    rel = os.fsencode(name)
    before = dst / name
    old = entry_from_stat(rel, os.lstat(before)) if os.path.lexists(before) else None
    action = Action(Op.COPY, rel, Reason.MISSING if old is None else Reason.SIZE,
                    entry_from_stat(rel, os.lstat(src / name)), old)
    after_listing()
    try:
        return applier.apply(action)
    finally:
        applier.close()


def test_a_new_file_has_no_name_in_dst_until_it_is_complete(make_tree, tmp_path):
    src = make_tree({"new": b"n" * 5000})
    dst = tmp_path / "dst"
    seen = []

    outcome = copy_one(src, dst, "new", lambda: seen.append(sorted(os.listdir(dst))))

    assert outcome.status is Status.DONE
    assert seen == [[]]  # no temporary name: an anonymous inode, linked when complete
    assert snapshot(dst, dir_mtimes=False) == snapshot(src, dir_mtimes=False)


def test_a_replaced_file_is_written_under_a_hidden_name_then_renamed(make_tree, tmp_path):
    src = make_tree({"f": b"new version"})
    dst = make_tree({"f": b"old"})
    seen = []

    outcome = copy_one(src, dst, "f", lambda: seen.append((temp_files(dst), (dst / "f").read_bytes())))

    assert outcome.status is Status.DONE
    [(temps, during)] = seen
    assert len(temps) == 1 and during == b"old"  # the old version stays whole until the rename
    assert (dst / "f").read_bytes() == b"new version" and temp_files(dst) == []


def test_a_name_taken_during_the_copy_is_replaced_atomically(make_tree, tmp_path):
    src = make_tree({"f": b"from src"})
    dst = tmp_path / "dst"

    outcome = copy_one(src, dst, "f", lambda: (dst / "f").write_bytes(b"someone else"))

    assert outcome.status is Status.DONE
    assert (dst / "f").read_bytes() == b"from src" and temp_files(dst) == []


def test_without_o_tmpfile_a_hidden_name_is_used(make_tree, tmp_path, monkeypatch):
    real_open = os.open

    def open_without_tmpfile(path, flags, *args, **kwargs):
        if flags & os.O_TMPFILE == os.O_TMPFILE:
            raise OSError(errno.EOPNOTSUPP, "not on this filesystem")
        return real_open(path, flags, *args, **kwargs)
    monkeypatch.setattr(copyfile.os, "open", open_without_tmpfile)
    src = make_tree({"a": b"a", "b": b"b"})
    dst = tmp_path / "dst"
    seen = []

    for name in ("a", "b"):
        assert copy_one(src, dst, name, lambda: seen.append(len(temp_files(dst)))).status is Status.DONE

    assert seen == [1, 1]
    assert sorted(os.listdir(dst)) == ["a", "b"] and (dst / "b").read_bytes() == b"b"


@pytest.mark.parametrize("existing", [False, True])
def test_a_failed_write_leaves_no_trace_and_keeps_the_old_version(make_tree, tmp_path, existing):
    src = make_tree({"f": b"new"})
    dst = make_tree({"f": b"old"} if existing else {})

    def disk_full():
        raise OSError(errno.ENOSPC, "No space left on device")
    outcome = copy_one(src, dst, "f", disk_full)

    assert outcome.status is Status.FAILED and outcome.error.errno == errno.ENOSPC
    assert temp_files(dst) == []
    assert os.listdir(dst) == (["f"] if existing else [])
    if existing:
        assert (dst / "f").read_bytes() == b"old"


def count_calls(monkeypatch, *names):
    calls = {name: 0 for name in names}
    for name in names:
        real = getattr(os, name)

        def counted(*args, real=real, name=name, **kwargs):
            calls[name] += 1
            return real(*args, **kwargs)
        monkeypatch.setattr(copyfile.os, name, counted)
    return calls


@needs_root
def test_a_new_file_that_gets_its_owner_and_permissions_at_creation_needs_no_fchown_or_fchmod(
        make_tree, tmp_path, monkeypatch):
    src = make_tree({"plain": File(b"p", mode=0o644), "group-writable": File(b"g", mode=0o664),
                     "setuid": File(b"s", mode=0o4755), "other-owner": File(b"o", mode=0o640)})
    os.chown(src / "other-owner", 1234, 5678)
    dst = tmp_path / "dst"
    old_umask = os.umask(0o022)
    try:
        calls = {}
        for name in ("plain", "group-writable", "setuid", "other-owner"):
            calls[name] = count_calls(monkeypatch, "fchown", "fchmod")
            assert copy_one(src, dst, name).status is Status.DONE
            monkeypatch.undo()
    finally:
        os.umask(old_umask)

    assert calls["plain"] == {"fchown": 0, "fchmod": 0}
    assert calls["group-writable"] == {"fchown": 0, "fchmod": 1}   # the umask took g+w away
    assert calls["setuid"] == {"fchown": 0, "fchmod": 1}           # never set at creation
    assert calls["other-owner"] == {"fchown": 1, "fchmod": 0}
    assert snapshot(dst, dir_mtimes=False) == snapshot(src, dir_mtimes=False)


@needs_root
def test_a_setgid_destination_folder_does_not_change_the_copied_group(make_tree, tmp_path):
    src = make_tree({"f": File(b"f", mode=0o644)})
    dst = tmp_path / "dst"
    dst.mkdir()
    os.chown(dst, 0, 4321)
    os.chmod(dst, 0o2775)  # new files here get group 4321 unless mirror sets it back

    assert copy_one(src, dst, "f").status is Status.DONE

    assert (os.stat(dst / "f").st_uid, os.stat(dst / "f").st_gid) == (os.stat(src / "f").st_uid,
                                                                       os.stat(src / "f").st_gid)


def test_the_listing_saves_an_fstat_before_the_copy(make_tree, tmp_path, monkeypatch):
    src = make_tree({"f": b"data"})
    inode = os.stat(src / "f").st_ino
    looks = []
    real_fstat = os.fstat

    def fstat(fd):
        st = real_fstat(fd)
        looks.append(st.st_ino == inode)
        return st
    monkeypatch.setattr(copyfile.os, "fstat", fstat)

    assert copy_one(src, tmp_path / "dst", "f").status is Status.DONE

    assert looks.count(True) == 1  # only the check after the copy


def rewrite(path, mtime_ns=None):
    """A change after the listing: longer content, and a new mtime if given."""
    def change():
        path.write_bytes(b"rewritten since, longer")
        if mtime_ns is not None:
            os.utime(path, ns=(mtime_ns, mtime_ns))
    return change


def test_a_file_changed_since_its_listing_is_copied_as_it_is_now(make_tree, tmp_path):
    src = make_tree({"f": b"as listed"})
    dst = tmp_path / "dst"

    outcome = copy_one(src, dst, "f", after_listing=rewrite(src / "f", 10**18))

    assert outcome.status is Status.DONE, outcome.error
    assert (dst / "f").read_bytes() == b"rewritten since, longer"
    assert os.stat(dst / "f").st_mtime_ns == 10**18
    assert temp_files(dst) == []


def test_where_anonymous_files_cannot_be_linked_a_hidden_name_is_used(make_tree, tmp_path, monkeypatch):
    real_link = os.link

    def link_without_proc(src, dst, **kwargs):
        if str(src).startswith("/proc/"):
            raise OSError(errno.EXDEV, "Invalid cross-device link")
        return real_link(src, dst, **kwargs)
    monkeypatch.setattr(copyfile.os, "link", link_without_proc)
    src = make_tree({"a": b"first", "b": b"second"})
    dst = tmp_path / "dst"
    applier = Applier(os.fsencode(src), os.fsencode(dst), Mode.COPY, Options(jobs=1))
    os.makedirs(dst)
    try:
        outcomes = [applier.apply(Action(Op.COPY, name, Reason.MISSING,
                                         entry_from_stat(name, os.lstat(src / name.decode()))))
                    for name in (b"a", b"b")]
    finally:
        applier.close()

    assert [outcome.status for outcome in outcomes] == [Status.DONE, Status.DONE]
    assert applier.files.temps.anonymous is False
    assert (dst / "a").read_bytes() == b"first" and (dst / "b").read_bytes() == b"second"
    assert temp_files(dst) == []


def test_a_default_acl_on_the_destination_folder_does_not_change_the_copied_bits(make_tree, tmp_path):
    src = make_tree({"f": File(b"f", mode=0o644)})
    dst = tmp_path / "dst"
    dst.mkdir()
    entries = [(0x01, 0o7), (0x04, 0o5), (0x20, 0o0)]  # user::rwx group::r-x other::---
    acl = struct.pack("<I", 2) + b"".join(struct.pack("<HHI", tag, perm, 0xFFFFFFFF) for tag, perm in entries)
    try:
        os.setxattr(dst, "system.posix_acl_default", acl)
    except OSError as error:
        pytest.skip(f"no POSIX ACLs on this filesystem ({error.strerror})")

    assert copy_one(src, dst, "f").status is Status.DONE

    assert stat.S_IMODE(os.stat(dst / "f").st_mode) == 0o644  # the ACL would have given 0640


@pytest.mark.parametrize("size", [9, 3 << 20])  # one write; a copy that reports as it goes
def test_progress_counts_a_redone_copy_once(make_tree, tmp_path, size):
    src = make_tree({"f": b"L" * size})
    progress = []

    def rewrite_longer():
        (src / "f").write_bytes(b"R" * (size + 5))
    outcome = copy_one(src, tmp_path / "dst", "f", after_listing=rewrite_longer,
                       on_bytes=progress.append)

    assert outcome.status is Status.DONE
    assert sum(progress) == size + 5 == outcome.nbytes
    assert (tmp_path / "dst" / "f").read_bytes() == b"R" * (size + 5)


def test_progress_counts_every_byte_of_a_small_file_once(make_tree, tmp_path):
    src = make_tree({"f": b"12345"})
    progress = []

    assert copy_one(src, tmp_path / "dst", "f", on_bytes=progress.append).status is Status.DONE
    assert progress == [5]


def test_a_source_file_that_became_a_folder_fails_as_a_source_error(make_tree, tmp_path):
    src = make_tree({"f": b"a file when listed"})
    dst = tmp_path / "dst"

    def become_a_folder():
        (src / "f").unlink()
        (src / "f").mkdir()
    outcome = copy_one(src, dst, "f", after_listing=become_a_folder)

    assert outcome.status is Status.FAILED
    assert "no longer a regular file" in str(outcome.error)
    assert outcome.error.filename == os.path.join(os.fsencode(src), b"f")
    assert os.listdir(dst) == []
