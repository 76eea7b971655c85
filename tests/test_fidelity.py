"""What a mirror keeps beyond rsync -a, and what check sees: xattrs, ACLs, -x, sockets, hard links."""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
from contextlib import contextmanager

import pytest

from conftest import needs_root, run_mirror
from mirror import MirrorError, Options, copy_tree

ACL_TOOLS = shutil.which("setfacl") and shutil.which("getfacl")


def xattrs_of(path) -> dict[str, bytes]:
    return {name: os.getxattr(path, name) for name in os.listxattr(path) if name.startswith("user.")}


def acl_of(path) -> str:
    out = subprocess.run(["getfacl", "-cp", os.fsdecode(path)], capture_output=True, text=True, check=True).stdout
    return "".join(line for line in out.splitlines(keepends=True) if not line.startswith("#"))


@pytest.fixture
def acl_tools():
    if not ACL_TOOLS:
        pytest.skip("setfacl/getfacl missing (Debian's `acl` package): apt-get install -y acl")


@contextmanager
def mounted(kind: str, where):
    """A fresh filesystem of `kind` mounted at `where` (root only)."""
    os.makedirs(where, exist_ok=True)
    if subprocess.run(["mount", "-t", kind, "none", os.fsdecode(where)], capture_output=True).returncode:
        pytest.skip(f"cannot mount a {kind} here")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", os.fsdecode(where)], check=True)


def test_xattrs_are_kept_with_X_and_only_with_it(make_tree, tmp_path):
    src = make_tree({"d/f": b"data", "g": b"other"})
    os.setxattr(src / "d/f", "user.color", b"red")
    os.setxattr(src / "d", "user.folder", b"yes")

    plain = run_mirror("copy", src, tmp_path / "plain")
    kept = run_mirror("copy", "-X", src, tmp_path / "kept")

    assert plain.returncode == kept.returncode == 0, kept.stderr
    assert xattrs_of(tmp_path / "plain/d/f") == {}
    assert xattrs_of(tmp_path / "kept/d/f") == {"user.color": b"red"}
    assert xattrs_of(tmp_path / "kept/d") == {"user.folder": b"yes"}
    assert run_mirror("check", "-X", src, tmp_path / "kept").returncode == 0


def test_a_changed_xattr_is_a_metadata_change_that_check_and_dry_run_show(make_tree, tmp_path):
    src = make_tree({"f": b"data", "same": b"s"})
    os.setxattr(src / "f", "user.color", b"red")
    dst = tmp_path / "dst"
    assert run_mirror("copy", "-X", src, dst).returncode == 0
    os.setxattr(src / "f", "user.color", b"blue")
    os.setxattr(src / "f", "user.new", b"1")

    check = run_mirror("check", "-X", src, dst)
    dry = run_mirror("sync", "-X", "-n", "-v", src, dst)
    assert xattrs_of(dst / "f") == {"user.color": b"red"}  # the dry run changed nothing
    blind = run_mirror("check", src, dst)
    sync = run_mirror("sync", "-X", "--json", src, dst)

    assert check.returncode == 1 and "* f  (xattrs differ)" in check.stdout
    assert "set-meta f  (xattrs differ)" in dry.stdout
    assert blind.returncode == 0  # without -X attributes are not compared
    assert sync.returncode == 0, sync.stderr
    summary = __import__("json").loads(sync.stdout.splitlines()[-1])
    assert (summary["files_copied"], summary["metadata_updated"]) == (0, 1)  # no bytes copied
    assert xattrs_of(dst / "f") == {"user.color": b"blue", "user.new": b"1"}
    os.removexattr(src / "f", "user.new")
    assert run_mirror("sync", "-X", src, dst).returncode == 0
    assert xattrs_of(dst / "f") == {"user.color": b"blue"}  # removed in DST too


def test_a_dry_run_changes_no_attribute(make_tree, tmp_path):
    src = make_tree({"f": b"data"})
    dst = tmp_path / "dst"
    assert run_mirror("copy", src, dst).returncode == 0
    os.setxattr(src / "f", "user.color", b"red")

    dry = run_mirror("copy", "-X", "-n", "-v", src, dst)

    assert "set-meta f  (xattrs differ)" in dry.stdout
    assert xattrs_of(dst / "f") == {}


def test_acls_are_kept_with_A_access_and_default(make_tree, tmp_path, acl_tools):
    src = make_tree({"d/f": b"data", "g": b"x"})
    subprocess.run(["setfacl", "-m", "u:nobody:rx", src / "d/f"], check=True)
    subprocess.run(["setfacl", "-d", "-m", "u:nobody:rwx", src / "d"], check=True)
    dst = tmp_path / "dst"

    assert run_mirror("copy", "-A", src, dst).returncode == 0

    assert acl_of(dst / "d/f") == acl_of(src / "d/f") and "user:nobody:r-x" in acl_of(dst / "d/f")
    assert acl_of(dst / "d") == acl_of(src / "d") and "default:user:nobody:rwx" in acl_of(dst / "d")
    assert "nobody" not in acl_of(run_copy_plain(src, tmp_path) / "d/f")
    subprocess.run(["setfacl", "-m", "u:nobody:r", src / "g"], check=True)
    check = run_mirror("check", "-A", src, dst)
    assert check.returncode == 1 and "* g  (ACLs differ)" in check.stdout
    assert run_mirror("sync", "-A", src, dst).returncode == 0
    assert acl_of(dst / "g") == acl_of(src / "g")


def run_copy_plain(src, tmp_path):
    assert run_mirror("copy", src, tmp_path / "plain").returncode == 0
    return tmp_path / "plain"


def test_rsync_sees_nothing_left_to_do_after_X_and_A(make_tree, tmp_path, acl_tools):
    if not shutil.which("rsync"):
        pytest.skip("rsync missing (apt-get install -y rsync)")
    src = make_tree({"d/f": b"data", "g": b"x", "l": b"y"})
    os.setxattr(src / "d/f", "user.a", b"1")
    subprocess.run(["setfacl", "-m", "u:nobody:rx", src / "g"], check=True)
    subprocess.run(["setfacl", "-d", "-m", "u:nobody:rwx", src / "d"], check=True)
    dst = tmp_path / "dst"

    assert run_mirror("sync", "-X", "-A", src, dst).returncode == 0

    listed = subprocess.run(["rsync", "-aAXn", "--checksum", "-i", "--delete", f"{src}/", f"{dst}/"],
                            capture_output=True, text=True, check=True).stdout
    assert listed == ""


@needs_root
def test_a_dst_that_keeps_no_xattrs_gives_one_warning_not_an_error_per_file(make_tree, tmp_path):
    src = make_tree({f"f{i}": b"x" for i in range(20)})
    for i in range(20):
        os.setxattr(src / f"f{i}", "user.n", str(i).encode())
    with mounted("ramfs", tmp_path / "ramfs") as dst:
        result = run_mirror("copy", "-X", src, dst)

        assert result.returncode == 0, result.stderr
        assert result.stderr.count("keeps no extended attributes (-X)") == 1
        assert sorted(os.listdir(dst)) == sorted(f"f{i}" for i in range(20))


@needs_root
def test_one_file_system_creates_the_mount_point_empty(make_tree, tmp_path):
    src = make_tree({"f": b"x", "mnt/.keep": b""})
    os.unlink(src / "mnt/.keep")
    with mounted("tmpfs", src / "mnt"):
        (src / "mnt/inner").write_bytes(b"other filesystem")
        os.mkdir(src / "mnt/sub")

        staying = run_mirror("copy", "-x", src, tmp_path / "x")
        crossing = run_mirror("copy", src, tmp_path / "all")
        check = run_mirror("check", "-x", src, tmp_path / "x")

    assert staying.returncode == crossing.returncode == 0, staying.stderr
    assert os.listdir(tmp_path / "x/mnt") == [] and (tmp_path / "x/f").read_bytes() == b"x"
    assert sorted(os.listdir(tmp_path / "all/mnt")) == ["inner", "sub"]
    assert check.returncode == 0, check.stdout


@needs_root
def test_one_file_system_sync_leaves_dst_contents_of_a_mount_point_alone(make_tree, tmp_path):
    src = make_tree({"f": b"x", "mnt/.keep": b""})
    os.unlink(src / "mnt/.keep")
    dst = make_tree({"mnt/old": b"kept"}, tmp_path / "dst")
    with mounted("tmpfs", src / "mnt"):
        (src / "mnt/inner").write_bytes(b"other filesystem")
        result = run_mirror("sync", "-x", src, dst)

    assert result.returncode == 0, result.stderr
    assert os.listdir(dst / "mnt") == ["old"]


def test_check_lists_a_socket_and_counts_it_only_with_strict(make_tree, tmp_path):
    src = make_tree({"f": b"x"})
    server = socket.socket(socket.AF_UNIX)
    server.bind(os.fsdecode(src / "sock"))
    try:
        assert run_mirror("copy", src, tmp_path / "dst").returncode == 0
        check = run_mirror("check", src, tmp_path / "dst")
        strict = run_mirror("check", "--strict", src, tmp_path / "dst")
        help_text = run_mirror("check", "--help").stdout
    finally:
        server.close()

    assert "! sock  (socket, not copied)" in check.stdout and check.returncode == 0
    assert "! sock  (socket, not copied)" in strict.stdout and strict.returncode == 1
    assert "--strict" in help_text and "sockets" in help_text


def test_check_H_compares_hard_link_groups(make_tree, tmp_path):
    src = make_tree({"a": b"same"})
    os.link(src / "a", src / "b")
    assert run_mirror("copy", src, tmp_path / "split").returncode == 0  # without -H: two files
    assert run_mirror("copy", "-H", src, tmp_path / "linked").returncode == 0

    split = run_mirror("check", "-H", src, tmp_path / "split")
    linked = run_mirror("check", "-H", src, tmp_path / "linked")

    assert split.returncode == 1 and "* b  (hard link)" in split.stdout
    assert linked.returncode == 0, linked.stdout


def test_X_needs_a_tree_that_can_give_attributes(tmp_path):
    from mirror.model import Entry, Kind

    class NoAttributes:
        path = b"elsewhere:"

        def root(self):
            return Entry(b"", Kind.DIR, 0o40755, 0, 0, 0, 0, 1, 1, 2)

    with pytest.raises(MirrorError, match="-X and -A need a local SRC"):
        copy_tree(NoAttributes(), tmp_path / "dst", Options(xattrs=True))
