"""One client connection to `mirror serve`: connect, prove the token, exchange frames."""
from __future__ import annotations

import errno
import os
import socket
from typing import NamedTuple

from ..errors import MirrorError
from ..model import SourceError
from . import DEFAULT_PORT, SCHEME, wire
from .stream import Link
from .wire import Frame, ProtocolError

CONNECT_S = 10.0
REPLY_S = 120.0       # no byte from the server for this long: the connection is dead


class Address(NamedTuple):
    """Where a tree is served and how to get in; small and picklable (a worker connects itself)."""

    host: str
    port: int
    path: bytes                  # below the served root; b"" for the root itself
    token: bytes | None = None
    tls_ca: str | None = None
    session: bytes = b"\0" * wire.SESSION  # the same for every connection of one run

    @property
    def url(self) -> bytes:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{SCHEME}{host}:{self.port}/".encode() + self.path


def parse_url(url: str) -> tuple[str, int, bytes]:
    """(host, port, path) of mirror://HOST[:PORT]/PATH; MirrorError for anything else."""
    rest = url[len(SCHEME):]
    hostport, _, path = rest.partition("/")
    if hostport.startswith("["):  # [IPv6]:port
        host, _, port_text = hostport[1:].partition("]")
        port_text = port_text[1:] if port_text.startswith(":") else port_text
    else:
        host, _, port_text = hostport.partition(":")
    try:
        port = int(port_text) if port_text else DEFAULT_PORT
        if not 0 < port < 65536:
            raise ValueError
    except ValueError:
        raise MirrorError(f"bad port in {url!r}") from None
    if not host:
        raise MirrorError(f"no host in {url!r}: write mirror://HOST:PORT/PATH")
    parts = [part for part in os.fsencode(path).split(b"/") if part]
    try:
        for part in parts:
            wire.check_name(part)
    except ProtocolError:
        raise MirrorError(f"bad path in {url!r}: no '.', '..' or NUL") from None
    return host, port, b"/".join(parts)


class HandshakeFailed(OSError):
    """The connection failed before it was ready (refused, closed, not a mirror server):
    reported as it is, and the server counts as down for a moment."""


class Refused(HandshakeFailed):
    """The server answered and refused: a wrong token, too many clients, another version."""


def lost(error: BaseException, path: bytes | None = None) -> SourceError:
    """A connection that failed, as the error of the entry at `path` that was being read."""
    if isinstance(error, HandshakeFailed):
        return SourceError(error.errno, error.strerror, path)
    if isinstance(error, ProtocolError):
        return SourceError(errno.EPROTO, f"protocol error from the server: {error}", path)
    if isinstance(error, socket.timeout):
        return SourceError(errno.ETIMEDOUT, "the server stopped answering", path)
    if isinstance(error, OSError) and error.errno is not None:
        return SourceError(error.errno, f"connection to the server lost: {error.strerror}", path)
    return SourceError(errno.ECONNRESET, "connection to the server lost", path)


class Connection:
    """A connected socket and the reads and writes of frames over it. With `wait` False and no
    token to prove, the handshake's answer is read with the first reply: requests sent at once
    go with the hello, and a new connection costs one round trip less."""

    def __init__(self, address: Address, wait: bool = True) -> None:
        self.address = address
        try:
            raw = socket.create_connection((address.host, address.port), timeout=CONNECT_S)
        except OSError as error:
            raise OSError(error.errno or errno.ECONNREFUSED,
                          error.strerror or str(error)) from None
        self.sock = self.raw = raw
        self.link: Link | None = None
        self.greeting = True
        try:
            raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if address.tls_ca is not None:
                from .credentials import client_tls
                self.sock = client_tls(address.tls_ca).wrap_socket(raw, server_hostname=address.host)
            self.link = Link(self.sock, CONNECT_S)
            self.nonce = os.urandom(wire.NONCE)
            self.send(wire.pack_hello(address.session, self.nonce))
            if wait or address.token is not None:
                self.greet()
        except BaseException as error:
            self.close()
            if isinstance(error, (HandshakeFailed, MirrorError)) or not isinstance(
                    error, (OSError, ProtocolError, EOFError)):
                raise
            raise handshake_failed(error, address) from None

    def greet(self) -> None:
        """Read the server's welcome (proving the token, if any) and its go-ahead."""
        self.greeting = False
        kind, payload = self.read(wire.MAX_REQUEST)
        if kind is Frame.ERROR:
            raise Refused(*wire.parse_error(payload))
        if kind is not Frame.WELCOME or len(payload) != wire.WELCOME.size:
            raise ProtocolError("no welcome")
        magic, version, flags, server_nonce = wire.WELCOME.unpack(payload)
        if magic != wire.MAGIC or version != wire.VERSION:
            raise ProtocolError("not a mirror server of this version")
        token, nonce = self.address.token, self.nonce
        if flags & wire.AUTH_REQUIRED:
            if token is None:
                raise Refused(errno.EACCES, "the server wants a token: give --token-file")
            self.send(wire.frame(Frame.AUTH, wire.proof(token, b"client", server_nonce, nonce)))
        kind, payload = self.read(wire.MAX_REQUEST)
        if kind is Frame.ERROR:
            raise Refused(*wire.parse_error(payload))
        if kind is not Frame.READY:
            raise ProtocolError("not ready")
        if flags & wire.AUTH_REQUIRED and not wire.check_proof(token, b"server", nonce, server_nonce, payload):
            raise Refused(errno.EACCES, "the server could not prove it holds the token")
        self.link.set_timeout(REPLY_S)

    def greeted(self) -> None:
        """The handshake's answer, read now if it was left for the first reply."""
        if self.greeting:
            try:
                self.greet()
            except (OSError, ProtocolError, EOFError) as error:
                if isinstance(error, HandshakeFailed):
                    raise
                raise handshake_failed(error, self.address) from None

    def send(self, data: bytes) -> None:
        try:
            self.link.send(data)
        except OSError as error:  # before the welcome: a server that hung up on the hello
            if not self.greeting or isinstance(error, HandshakeFailed):
                raise
            raise handshake_failed(error, self.address) from None

    def read(self, limit: int = wire.MAX_REPLY) -> tuple[Frame, bytes]:
        kind, length = self.read_header(limit)
        return kind, self.read_exact(length)

    def read_header(self, limit: int = wire.MAX_REPLY) -> tuple[Frame, int]:
        if self.greeting:
            self.greeted()
        header = self.link.header(limit)
        if header is None:
            raise EOFError
        return header

    def read_exact(self, count: int) -> bytes:
        data = self.link.take(count) if count else b""
        if len(data) < count:
            raise EOFError
        return data

    def payload_to(self, fd: int, count: int, offset: int) -> None:
        """The DATA payload of `count` bytes into file `fd` at `offset` (WriteFailed: DST's)."""
        self.link.payload_to(fd, count, offset)

    def close(self) -> None:
        """Close for good: the socket, the TLS layer over it, and the splice pipe."""
        if self.link is not None:
            self.link.close()
        for part in (self.sock, self.raw):
            try:
                part.close()
            except OSError:
                pass


def read_reply(conn: Connection, asked: Frame, most: int = wire.MAX_LISTING):
    """A ROOT, LIST or DIGEST reply: its value, or the OSError the server answered with; None
    for a listing of more than `most` entries (the rest of it not read)."""
    kind, payload = conn.read()
    if kind is Frame.ERROR:
        return OSError(*wire.parse_error(payload))
    if asked is Frame.LIST:
        listing: dict[bytes, wire.RemoteStat] = {}
        while kind is Frame.ENTRIES:
            wire.parse_entries(payload, listing)
            if len(listing) > wire.MAX_LISTING:  # a hostile server's endless folder
                raise ProtocolError("listing too long")
            if len(listing) > most:
                return None
            kind, payload = conn.read()
        if kind is not Frame.END or payload:
            raise ProtocolError("listing not ended")
        return listing
    if asked is Frame.ROOT and kind is Frame.ENTRY:
        return wire.parse_one_stat(payload)
    if asked is Frame.DIGEST and kind is Frame.HASH and len(payload) == 16:
        return payload
    raise ProtocolError(f"{kind.name} in reply to {asked.name}")


def skip_file(conn: Connection, limit: int) -> None:
    """Read past a file's reply nobody asked for in the end (no more than `limit` bytes)."""
    kind, _ = conn.read()
    if kind is Frame.ERROR:
        return
    if kind is not Frame.FILE:
        raise ProtocolError(f"{kind.name} instead of a file")
    skipped = 0
    while True:
        kind, data = conn.read()
        if kind is Frame.EOF or kind is Frame.ERROR:
            return
        if kind is not Frame.DATA:
            raise ProtocolError(f"{kind.name} inside a file")
        wire.check_data(len(data), skipped, limit)
        skipped += len(data)


def handshake_failed(error: BaseException, address: Address) -> HandshakeFailed:
    if type(error).__module__ == "ssl":  # a certificate refused, a protocol mismatch
        reason = getattr(error, "reason", None) or error
        return HandshakeFailed(errno.EACCES, f"TLS handshake failed: {reason}")
    if isinstance(error, EOFError) or (isinstance(error, OSError) and error.errno in (
            errno.ECONNRESET, None)):
        hint = "" if address.tls_ca else " (if the server uses TLS, give --tls-ca)"
        return HandshakeFailed(errno.ECONNRESET, f"the server closed the connection at the handshake{hint}")
    failure = lost(error)  # a plain OSError: no entry was being read yet
    return HandshakeFailed(failure.errno, failure.strerror)
