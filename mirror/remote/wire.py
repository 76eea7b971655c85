"""The wire format of `mirror serve`: frames, messages and the checks both ends make (docs/protocol.md).

Pure functions of bytes, no sockets: the fuzz tests drive them directly. Nothing here unpickles
or evaluates what a peer sends; every field has a fixed layout, and every name, path and size
is checked before anything uses it.
"""
from __future__ import annotations

import enum
import hashlib
import hmac
import stat
import struct
from typing import NamedTuple

VERSION = 1
MAGIC = b"MIRROR"
HEADER = struct.Struct("!IB")           # payload length, frame type
MAX_REQUEST = 8192                      # a request's payload: a path and a few numbers
MAX_REPLY = (1 << 20) + 4096            # a reply's payload: data or a part of a listing
DATA_FRAME = 1 << 20                    # file bytes per DATA frame
MAX_PATH = 4096                         # bytes in a requested path (PATH_MAX)
MAX_NAME = 255                          # bytes in one name (NAME_MAX)
MAX_TARGET = 4095                       # bytes in a symlink's target
NONCE = 32
MAC = 32                                # HMAC-SHA256
SESSION = 16
NO_LIMIT = (1 << 64) - 1                # READ's length: to the end of the file
MAX_LISTING = 1 << 24                   # entries in one folder a client takes

HELLO = struct.Struct(f"!6sH{SESSION}s{NONCE}s")   # magic, version, session id, client nonce
WELCOME = struct.Struct(f"!6sHB{NONCE}s")          # magic, version, flags, server nonce
STAT = struct.Struct("!IQqqqIIQQIQ")  # mode, size, mtime, ctime, atime (ns), uid, gid, ino, dev, nlink, rdev
EXPECT = struct.Struct("!BQqq")       # READ: expected? size, mtime_ns, ctime_ns
RANGE = struct.Struct("!QQ")          # READ: offset, length
U16 = struct.Struct("!H")
U32 = struct.Struct("!I")
EOF = struct.Struct("!BQ")            # unchanged?, bytes sent
AUTH_REQUIRED = 1
FORMATS = frozenset({stat.S_IFREG, stat.S_IFDIR, stat.S_IFLNK, stat.S_IFIFO, stat.S_IFCHR,
                     stat.S_IFBLK, stat.S_IFSOCK})


class Frame(enum.IntEnum):
    """Frame types; requests below 0x80, replies above."""

    HELLO = 0x01
    AUTH = 0x02
    ROOT = 0x03
    LIST = 0x04
    READ = 0x05
    DIGEST = 0x06
    WELCOME = 0x81
    READY = 0x82
    ENTRY = 0x83
    ENTRIES = 0x84
    END = 0x85
    FILE = 0x86
    DATA = 0x87
    EOF = 0x88
    HASH = 0x89
    ERROR = 0x8F


REQUESTS = frozenset({Frame.AUTH, Frame.ROOT, Frame.LIST, Frame.READ, Frame.DIGEST})
FRAME_OF = {int(kind): kind for kind in Frame}  # a dict lookup: Frame(code) is a Python call


class ProtocolError(Exception):
    """The peer broke the protocol: the connection is closed, nothing it sent is used."""


class RemoteStat(NamedTuple):
    """An entry's lstat as the server saw it; read by plan.scan like an os.stat_result."""

    st_mode: int
    st_size: int
    st_mtime_ns: int
    st_ctime_ns: int
    st_atime_ns: int
    st_uid: int
    st_gid: int
    st_ino: int
    st_dev: int
    st_nlink: int
    st_rdev: int
    target: bytes | None = None  # symlinks: what the link holds


class Read(NamedTuple):
    """A READ request: the file at `path`, from `offset`, at most `length` bytes; `expect`
    (size, mtime_ns, ctime_ns) as listed, to say whether the file was read as it was listed."""

    path: bytes
    offset: int
    length: int
    expect: tuple[int, int, int] | None


def frame(kind: Frame, payload: bytes = b"") -> bytes:
    return HEADER.pack(len(payload), kind) + payload


def parse_header(header: bytes, limit: int) -> tuple[Frame, int]:
    """(type, payload length) of a frame header; ProtocolError for an unknown, oversized or
    truncated one."""
    if len(header) != HEADER.size:
        raise ProtocolError("truncated frame header")
    length, code = HEADER.unpack(header)
    kind = FRAME_OF.get(code)
    if kind is None:
        raise ProtocolError(f"unknown frame type {code:#x}")
    if length > limit:
        raise ProtocolError(f"frame of {length} bytes (at most {limit})")
    return kind, length


# -- paths and names ------------------------------------------------------------------------

def check_path(path: bytes) -> bytes:
    """A requested path, relative to the served root: b"" (the root) or names joined by b"/"."""
    if len(path) > MAX_PATH:
        raise ProtocolError("path too long")
    if path:
        for name in path.split(b"/"):
            check_name(name)
    return path


def check_name(name: bytes) -> bytes:
    """One name of a listing or a path: never empty, ".", "..", nor holding "/" or NUL."""
    if not name or name in (b".", b"..") or b"/" in name or b"\0" in name:
        raise ProtocolError(f"bad name {name[:64]!r}")
    if len(name) > MAX_NAME:
        raise ProtocolError("name too long")
    return name


def pack_bytes(data: bytes) -> bytes:
    return U16.pack(len(data)) + data


class Reader:
    """Reads a payload field by field; any shortfall or leftover is a ProtocolError."""

    def __init__(self, payload: bytes) -> None:
        self.data = memoryview(payload)
        self.at = 0

    def take(self, count: int) -> bytes:
        if self.at + count > len(self.data):
            raise ProtocolError("truncated message")
        chunk = self.data[self.at:self.at + count].tobytes()
        self.at += count
        return chunk

    def unpack(self, layout: struct.Struct) -> tuple:
        return layout.unpack(self.take(layout.size))

    def bytes(self) -> bytes:
        (count,) = self.unpack(U16)
        return self.take(count)

    def end(self) -> None:
        if self.at != len(self.data):
            raise ProtocolError("trailing bytes in message")


# -- requests -------------------------------------------------------------------------------

def pack_hello(session: bytes, nonce: bytes) -> bytes:
    return frame(Frame.HELLO, HELLO.pack(MAGIC, VERSION, session, nonce))


def parse_hello(payload: bytes) -> tuple[int, bytes, bytes]:
    """(version, session id, client nonce); a wrong magic is not our protocol at all."""
    if len(payload) != HELLO.size:
        raise ProtocolError("bad hello")
    magic, version, session, nonce = HELLO.unpack(payload)
    if magic != MAGIC:
        raise ProtocolError("not a mirror client")
    return version, session, nonce


def pack_path_request(kind: Frame, path: bytes) -> bytes:
    return frame(kind, pack_bytes(path))


def pack_read(request: Read) -> bytes:
    expect = EXPECT.pack(1, *request.expect) if request.expect else EXPECT.pack(0, 0, 0, 0)
    return frame(Frame.READ, pack_bytes(request.path) + RANGE.pack(request.offset, request.length) + expect)


def parse_request(kind: Frame, payload: bytes) -> bytes | Read:
    """The path of a ROOT, LIST or DIGEST request, or a Read; checked, confined to the root."""
    if kind not in REQUESTS or kind is Frame.AUTH:
        raise ProtocolError(f"unexpected {kind.name} frame")
    reader = Reader(payload)
    path = check_path(reader.bytes())
    if kind is not Frame.READ:
        reader.end()
        return path
    offset, length = reader.unpack(RANGE)
    has_expect, size, mtime_ns, ctime_ns = reader.unpack(EXPECT)
    reader.end()
    if has_expect > 1 or size >= 1 << 63 or offset >= 1 << 63:
        raise ProtocolError("bad read request")
    return Read(path, offset, length, (size, mtime_ns, ctime_ns) if has_expect else None)


# -- replies --------------------------------------------------------------------------------

def pack_stat(entry) -> bytes:
    """An Entry's fields (a file's size; 0 for the rest, as plan.scan gives them)."""
    return STAT.pack(entry.mode, entry.size, entry.mtime_ns, entry.ctime_ns, entry.atime_ns,
                     entry.uid, entry.gid, entry.ino, entry.dev, entry.nlink, entry.rdev)


def parse_stat(reader: Reader, target: bytes | None = None) -> RemoteStat:
    return checked_stat(reader.unpack(STAT), target)


def checked_stat(fields: tuple, target: bytes | None = None) -> RemoteStat:
    if stat.S_IFMT(fields[0]) not in FORMATS or fields[0] >> 16 or fields[1] >= 1 << 63:
        raise ProtocolError("bad entry")
    return RemoteStat(*fields, target)


def pack_entries(items: list[tuple[bytes, object]]) -> bytes:
    """An ENTRIES frame: (name, Entry) for each entry, a link with its target."""
    parts = [U32.pack(len(items))]
    for name, entry in items:
        parts += (pack_bytes(name), pack_stat(entry), pack_bytes(entry.target or b""))
    return frame(Frame.ENTRIES, b"".join(parts))


def parse_entries(payload: bytes, listing: dict[bytes, RemoteStat]) -> None:
    """Add an ENTRIES frame's entries to `listing`; a hostile server's names never get through."""
    reader = Reader(payload)
    (count,) = reader.unpack(U32)
    for _ in range(count):
        name = check_name(reader.bytes())
        st = parse_stat(reader)
        target = reader.bytes()
        if stat.S_ISLNK(st.st_mode):
            if not target or b"\0" in target or len(target) > MAX_TARGET:
                raise ProtocolError("bad link target")
            st = st._replace(target=target)
        elif target:
            raise ProtocolError("link target on a non-link")
        if name in listing:
            raise ProtocolError("name listed twice")
        listing[name] = st
    reader.end()


def parse_one_stat(payload: bytes) -> RemoteStat:
    if len(payload) != STAT.size:
        raise ProtocolError("truncated message" if len(payload) < STAT.size else "trailing bytes in message")
    return checked_stat(STAT.unpack(payload))


def check_data(length: int, received: int, limit: int) -> None:
    """A DATA frame the client may take: not empty (a server could spin it for ever), not over
    a frame, not past the bytes asked for."""
    if not 0 < length <= DATA_FRAME or received + length > limit:
        raise ProtocolError("more data than the file has" if length else "empty data frame")


def check_end(same: bool, sent: int, received: int, expected: int) -> None:
    """An EOF must count the bytes sent, and an unchanged file must have sent them all."""
    if sent != received or (same and received != expected):
        raise ProtocolError("end of file does not match the data")


def pack_error(code: int, message: str) -> bytes:
    return frame(Frame.ERROR, U32.pack(code) + message.encode("utf-8", "replace")[:1024])


def parse_error(payload: bytes) -> tuple[int, str]:
    if len(payload) < U32.size or len(payload) > U32.size + 1024:
        raise ProtocolError("bad error message")
    (code,) = U32.unpack(payload[:U32.size])
    return code, payload[U32.size:].decode("utf-8", "replace")


def pack_eof(unchanged: bool, sent: int) -> bytes:
    return frame(Frame.EOF, EOF.pack(unchanged, sent))


def parse_eof(payload: bytes) -> tuple[bool, int]:
    if len(payload) != EOF.size:
        raise ProtocolError("bad end of file")
    unchanged, sent = EOF.unpack(payload)
    if unchanged > 1:
        raise ProtocolError("bad end of file")
    return bool(unchanged), sent


# -- authentication -------------------------------------------------------------------------

def proof(token: bytes, role: bytes, first: bytes, second: bytes) -> bytes:
    """HMAC-SHA256 of both nonces under the shared token: proves the token, never sends it.
    The role (b"client", b"server") keeps one side's proof from being replayed as the other's.
    The key is the token's SHA-256: HMAC pads a short key with zero bytes, so b"k" and b"k\0"
    would be the same key (found by the fuzz test)."""
    key = hashlib.sha256(token).digest()
    return hmac.new(key, b"mirror/1 " + role + b"\0" + first + second, hashlib.sha256).digest()


def check_proof(token: bytes, role: bytes, first: bytes, second: bytes, given: bytes) -> bool:
    return hmac.compare_digest(proof(token, role, first, second), given)
