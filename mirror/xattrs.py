"""Extended attributes and POSIX ACLs (-X, -A): which names a run keeps, read and written on one inode.

POSIX ACLs are the extended attributes system.posix_acl_access and system.posix_acl_default
(what getfacl/setfacl read and write), so both options share this code and need no library.
"""
from __future__ import annotations

import errno
import os
from typing import NamedTuple, Union

ACL_PREFIX = "system.posix_acl_"
NOT_HERE = frozenset({errno.ENOTSUP, errno.EOPNOTSUPP})   # the filesystem keeps none
# A valid access ACL equal to mode 0644 (version 2; user::rw-, group::r--, other::r--):
# what the probe sets to learn whether DST keeps ACLs.
PROBE_ACL = bytes.fromhex("02000000" "0100" "0600" "ffffffff" "0400" "0400" "ffffffff"
                          "2000" "0400" "ffffffff")
Target = Union[int, str, bytes]   # a descriptor, or a path (under /proc/self/fd/N: pinned)
Attrs = dict


class Scope(NamedTuple):
    """The names a run keeps: user.* with -X (trusted.* and security.* too as root, who alone
    can read and write them), the two ACL names with -A."""

    xattrs: bool
    acls: bool
    root: bool

    def wants(self, name: str) -> bool:
        if name.startswith(ACL_PREFIX):
            return self.acls
        if name.startswith("user."):
            return self.xattrs
        return self.xattrs and self.root and name.startswith(("trusted.", "security."))


def scope_of(options) -> Scope | None:
    if not (options.xattrs or options.acls):
        return None
    return Scope(options.xattrs, options.acls, os.geteuid() == 0)


def read(target: Target, scope: Scope, follow: bool = True) -> Attrs:
    """The attributes in scope of one inode, by name; {} where the filesystem keeps none."""
    try:
        names = os.listxattr(target, follow_symlinks=follow)
    except OSError as error:
        if error.errno in NOT_HERE:
            return {}
        raise
    found = {}
    for name in names:
        if scope.wants(name):
            try:
                found[name] = os.getxattr(target, name, follow_symlinks=follow)
            except OSError as error:
                if error.errno != errno.ENODATA:  # removed since it was listed
                    raise
    return found


def write(target: Target, wanted: Attrs, scope: Scope, follow: bool = True) -> None:
    """Make the inode's attributes in scope exactly `wanted`: set what differs, remove the
    rest (a new file may have inherited a default ACL, or kept old attributes)."""
    have = read(target, scope, follow)
    for name, value in wanted.items():
        if have.get(name) != value:
            os.setxattr(target, name, value, follow_symlinks=follow)
    for name in have:
        if name not in wanted:
            os.removexattr(target, name, follow_symlinks=follow)


def differ(src: Attrs, dst: Attrs) -> str | None:
    """What differs: "acls" when only ACLs do, "xattrs" when other attributes do, or None."""
    if src == dst:
        return None
    names = {name for name in src.keys() | dst.keys() if src.get(name) != dst.get(name)}
    return "acls" if all(name.startswith(ACL_PREFIX) for name in names) else "xattrs"


def supported(folder: bytes, scope: Scope) -> Scope:
    """What of `scope` DST's filesystem can keep, tried once on a nameless file there, so
    that a run warns once instead of failing every entry."""
    try:
        fd = os.open(folder, os.O_WRONLY | os.O_TMPFILE | os.O_CLOEXEC, 0o644)
    except OSError:
        return scope  # cannot tell here: each entry will say
    try:
        return scope._replace(xattrs=scope.xattrs and keeps(fd, "user.mirror-probe", b"1"),
                              acls=scope.acls and keeps(fd, ACL_PREFIX + "access", PROBE_ACL))
    finally:
        os.close(fd)


def keeps(fd: int, name: str, value: bytes) -> bool:
    try:
        os.setxattr(fd, name, value)
    except OSError as error:
        return error.errno not in NOT_HERE
    return True
