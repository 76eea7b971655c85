"""Content digests for --checksum: xxh3-128, as rsync uses."""
from __future__ import annotations

import os

import xxhash

from ..paths import DirCache, split

CHUNK = 1 << 20


def file_digest(folders: DirCache, rel: bytes) -> bytes:
    """The xxh3-128 digest of a regular file, read without following links or blocking."""
    parent, name = split(rel)
    fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
                 dir_fd=folders.get(parent))
    digest = xxhash.xxh3_128()
    try:
        with open(fd, "rb", buffering=0, closefd=False) as stream:
            buffer = bytearray(CHUNK)
            view = memoryview(buffer)
            while count := stream.readinto(buffer):
                digest.update(view[:count])
    finally:
        os.close(fd)
    return digest.digest()
