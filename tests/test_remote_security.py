"""`mirror serve` faces a network: nothing outside ROOT is reachable, malformed frames cost only
their own connection, the token never crosses the wire, the limits hold, a hostile server cannot
make the client write outside DST, and many clients at once (one of them never reading) are
all served correctly in bounded memory."""
from __future__ import annotations

import errno
import hashlib
import os
import re
import select
import socket
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import NamedTuple

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import Fifo, Link, build, needs_root
from mirror.paths import join
from mirror.remote import server as server_module
from mirror.remote import wire
from mirror.remote.connection import Address, Connection, Refused
from mirror.remote.server import RateLimit, Server
from mirror.remote.tree import RemoteTree
from mirror.remote.wire import Frame, Read

SECRET = b"SECRET-bytes-outside-ROOT-c0ffee"
INNER = b"inner-only-name.txt"          # a name only found inside the folder outside ROOT
TOKEN = b"the-shared-token-never-on-the-wire-5e1f"
REPO = Path(__file__).resolve().parent.parent


# -- a tree beside a secret -----------------------------------------------------------------

def secret_tree(tmp_path: Path) -> Path:
    """ROOT, with links of every kind leading to a folder beside it that holds SECRET."""
    outside = tmp_path / "outside"
    build(outside, {"secret.txt": SECRET, INNER.decode(): SECRET})
    root = tmp_path / "root"
    build(root, {
        "top.txt": b"top",
        "a/b.txt": b"hello",
        "a/deep/big.bin": bytes(range(256)) * 400,        # over 64 KiB: sent by sendfile
        "outlink": Link(str(outside)),                    # a folder outside, absolute
        "leak": Link(str(outside / "secret.txt")),        # a file outside, absolute
        "rel-leak": Link("../outside/secret.txt"),        # a file outside, relative
        "a/up": Link("../../outside"),                    # a folder outside, from a subfolder
    })
    return root


def local_tree(root: Path) -> dict[bytes, object]:
    """What pull() gives for a local folder: folders, links with their targets, files' digests."""
    base, result, stack = os.fsencode(root), {}, [b""]
    while stack:
        rel = stack.pop()
        for name in os.listdir(os.path.join(base, rel) if rel else base):
            path = join(rel, name)
            full = os.path.join(base, path)
            st = os.lstat(full)
            if stat.S_ISDIR(st.st_mode):
                result[path] = "folder"
                stack.append(path)
            elif stat.S_ISLNK(st.st_mode):
                result[path] = ("link", os.readlink(full))
            else:
                result[path] = hashlib.sha256(Path(os.fsdecode(full)).read_bytes()).hexdigest()
    return result


def pull(address: Address) -> dict[bytes, object]:
    """Everything a RemoteTree reads of the tree at `address`, as local_tree() gives it; every
    file's bytes go through receive() into a memfd."""
    tree, result, out = RemoteTree(address), {}, os.memfd_create("pull")
    try:
        assert stat.S_ISDIR(tree.root().mode)
        stack = [b""]
        while stack:
            rel = stack.pop()
            for name, st in tree.list(rel).items():
                path = join(rel, name)
                if stat.S_ISDIR(st.st_mode):
                    result[path] = "folder"
                    stack.append(path)
                elif stat.S_ISLNK(st.st_mode):
                    result[path] = ("link", st.target)
                else:
                    handle, entry = tree.open(path, None)
                    try:
                        os.ftruncate(out, 0)
                        os.lseek(out, 0, os.SEEK_SET)
                        assert tree.receive(handle, out, entry.size, lambda count: None) == entry.size
                    finally:
                        tree.release(handle)
                    result[path] = hashlib.sha256(os.pread(out, entry.size + 1, 0)).hexdigest()
    finally:
        tree.close()
        os.close(out)
    return result


# -- a server in this process ---------------------------------------------------------------

class Served:
    """A Server on a free loopback port, serving from a thread; its log lines in `lines`."""

    def __init__(self, root: Path, crashes: list, **options) -> None:
        self.root, self.crashes, self.lines = root, crashes, []
        self.server = Server(root, port=0, log=self.lines.append, **options)
        self.host, self.port = self.server.listen()
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def address(self, token: bytes | None = None, session: bytes | None = None) -> Address:
        return Address(self.host, self.port, b"", token, None, session or os.urandom(wire.SESSION))

    def connect(self, token: bytes | None = None, session: bytes | None = None) -> Connection:
        return Connection(self.address(token, session))

    def logged(self, pattern: str, timeout: float = 5.0) -> bool:
        """A log line matching `pattern` (a regular expression) appears within `timeout`."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(re.search(pattern, line) for line in list(self.lines)):
                return True
            time.sleep(0.01)
        return False


@pytest.fixture
def serve(tmp_path):
    """serve(root, **Server options) -> a running Served; stopped after the test. A handler
    thread that dies of an exception (a traceback in the server's log) fails the test."""
    crashes, started = [], []
    previous = threading.excepthook
    threading.excepthook = lambda args: crashes.append(repr(args.exc_value))  # not its frames: they
    # hold the connection's socket open

    def start(root: Path, **options) -> Served:
        served = Served(root, crashes, **options)
        started.append(served)
        return served

    try:
        yield start
    finally:
        for served in started:
            served.server.stop()
        threading.excepthook = previous
    assert crashes == [], f"server threads died: {crashes!r}"


class RawClient:
    """A socket speaking frames by hand; every byte it receives is kept in `received`."""

    def __init__(self, served: Served) -> None:
        self.sock = socket.create_connection((served.host, served.port), timeout=10)
        self.received = bytearray()
        self.nonce = os.urandom(wire.NONCE)

    def send(self, data: bytes) -> None:
        try:
            self.sock.sendall(data)
        except OSError:  # the server may have closed already: what it answered is what counts
            pass

    def recv_exact(self, count: int) -> bytes | None:
        data = b""
        while len(data) < count:
            try:
                chunk = self.sock.recv(count - len(data))
            except ConnectionResetError:
                chunk = b""
            if not chunk:
                return None
            self.received += chunk
            data += chunk
        return data

    def read_frame(self) -> tuple[int, bytes] | None:
        """(type code, payload) of the next frame, or None if the server closed the connection."""
        header = self.recv_exact(wire.HEADER.size)
        if header is None:
            return None
        length, code = wire.HEADER.unpack(header)
        payload = self.recv_exact(length)
        return None if payload is None else (code, payload)

    def hello(self, version: int = wire.VERSION) -> tuple[int, bytes]:
        """Say hello; the WELCOME's (flags, server nonce)."""
        self.send(wire.frame(Frame.HELLO, wire.HELLO.pack(wire.MAGIC, version, os.urandom(16), self.nonce)))
        code, payload = self.read_frame()
        assert code == Frame.WELCOME, (code, payload)
        _, _, flags, server_nonce = wire.WELCOME.unpack(payload)
        return flags, server_nonce

    def handshake(self) -> None:
        flags, _ = self.hello()
        assert not flags
        assert self.read_frame() == (Frame.READY, b"")

    def closed(self, timeout: float = 10.0) -> bool:
        """Stop sending and read whatever comes: True once the server has closed the connection."""
        try:
            self.sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        self.sock.settimeout(timeout)
        try:
            while chunk := self.sock.recv(1 << 16):
                self.received += chunk
        except ConnectionResetError:
            pass
        except socket.timeout:
            return False
        finally:
            self.sock.close()
        return True


ENDS = {Frame.ERROR, Frame.ENTRY, Frame.END, Frame.EOF, Frame.HASH}


def exchange(conn: Connection, request: bytes) -> tuple[list[tuple[Frame, bytes]], bool]:
    """Send one request; its reply's frames, and whether the server closed the connection."""
    replies = []
    try:
        conn.send(request)
        while True:
            kind, payload = conn.read()
            replies.append((kind, payload))
            if kind in ENDS:
                return replies, False
    except (EOFError, ConnectionError):
        return replies, True


def request(kind: Frame, path: bytes) -> bytes:
    if kind is Frame.READ:
        return wire.pack_read(Read(path, 0, wire.NO_LIMIT, None))
    return wire.pack_path_request(kind, path)


# -- 2. traversal ---------------------------------------------------------------------------

KINDS = [Frame.ROOT, Frame.LIST, Frame.READ, Frame.DIGEST]
# Refused by the request parser: the connection is closed, nothing is opened.
BAD_PATHS = [b"..", b"../x", b"/etc", b"/etc/passwd", b"a/../../x", b"a/\0b", b"\0", b"a/./b.txt",
             b"a//b.txt", b"a/", b"../outside/secret.txt", b"../root/top.txt"]
# Well formed, and through or onto a link leading outside: refused where the link is met.
LINK_PATHS = [b"outlink", b"outlink/secret.txt", b"outlink/" + INNER, b"leak", b"rel-leak",
              b"a/up", b"a/up/secret.txt"]


@pytest.mark.parametrize("kind", KINDS, ids=lambda kind: kind.name)
def test_paths_leaving_root_are_refused_and_nothing_outside_is_sent(tmp_path, serve, kind):
    served = serve(secret_tree(tmp_path))
    received = []

    for path in BAD_PATHS:
        conn = served.connect()
        try:
            replies, closed = exchange(conn, request(kind, path))
        finally:
            conn.close()
        received += replies
        assert replies == [] and closed, path
    for path in LINK_PATHS:
        conn = served.connect()
        try:
            replies, closed = exchange(conn, request(kind, path))
            received += replies
            assert not closed and [code for code, _ in replies] == [Frame.ERROR], (path, replies)
            assert wire.parse_error(replies[0][1])[0] in (errno.ELOOP, errno.ENOTDIR), (path, replies)
            assert exchange(conn, request(Frame.ROOT, b""))[0][0][0] is Frame.ENTRY  # still served
        finally:
            conn.close()

    everything = b"".join(payload for _, payload in received)
    assert SECRET not in everything and INNER not in everything
    assert served.logged("protocol error: bad name")


def test_links_to_outside_are_listed_as_links_and_pulled_as_links(tmp_path, serve):
    root = secret_tree(tmp_path)
    served = serve(root)
    conn = served.connect()
    try:
        top, _ = exchange(conn, request(Frame.LIST, b""))
        sub, _ = exchange(conn, request(Frame.LIST, b"a"))
    finally:
        conn.close()
    listing = {}
    for kind, payload in top:
        if kind is Frame.ENTRIES:
            wire.parse_entries(payload, listing)

    assert [kind for kind, _ in top][-1] is Frame.END
    assert sorted(listing) == [b"a", b"leak", b"outlink", b"rel-leak", b"top.txt"]
    assert stat.S_ISLNK(listing[b"outlink"].st_mode)
    assert listing[b"outlink"].target == os.fsencode(tmp_path / "outside")
    assert listing[b"leak"].target == os.fsencode(tmp_path / "outside/secret.txt")
    assert listing[b"rel-leak"].target == b"../outside/secret.txt"
    assert all(listing[name].st_size == 0 for name in (b"outlink", b"leak", b"rel-leak"))
    everything = b"".join(payload for _, payload in top + sub)
    assert SECRET not in everything and INNER not in everything
    assert pull(served.address()) == local_tree(root)


def test_a_fifo_is_never_opened_by_a_request(tmp_path, serve):
    """Opening a FIFO (or a device: a watchdog, a tape) acts on its own, and a read of one may
    never end: READ and DIGEST refuse anything but a regular file before opening it."""
    root = tmp_path / "root"
    build(root, {"pipe": Fifo(), "file": b"x"})
    served = serve(root)
    writer_in = threading.Event()  # a writer blocks in open() until someone opens the FIFO to read

    def writer():
        os.close(os.open(root / "pipe", os.O_WRONLY))
        writer_in.set()
    threading.Thread(target=writer, daemon=True).start()
    conn = served.connect()
    conn.sock.settimeout(5)
    try:
        for kind in (Frame.READ, Frame.DIGEST):
            replies, closed = exchange(conn, request(kind, b"pipe"))
            assert [code for code, _ in replies] == [Frame.ERROR] and not closed, (kind, replies)
            assert wire.parse_error(replies[0][1])[0] == errno.EINVAL
        assert not writer_in.wait(0.2), "the server opened the FIFO"
    finally:
        conn.close()
        os.close(os.open(root / "pipe", os.O_RDONLY | os.O_NONBLOCK))  # let the writer go
    assert writer_in.wait(5)


@needs_root
def test_a_digest_of_a_device_is_refused_not_read_for_ever(tmp_path, serve):
    root = tmp_path / "root"
    build(root, {"file": b"x"})
    os.mknod(root / "zero", stat.S_IFCHR | 0o666, os.makedev(1, 5))  # /dev/zero: never ends
    served = serve(root)
    conn = served.connect()
    conn.sock.settimeout(5)
    try:
        for kind in (Frame.DIGEST, Frame.READ):
            replies, closed = exchange(conn, request(kind, b"zero"))
            assert [code for code, _ in replies] == [Frame.ERROR] and not closed, (kind, replies)
    finally:
        conn.close()


# -- 3. malformed frames --------------------------------------------------------------------

MALFORMED = {
    # name: (handshake first?, bytes sent, what the log line says)
    "unknown frame type": (True, wire.HEADER.pack(0, 0x7F), "unknown frame type 0x7f"),
    "a reply type sent as a request": (True, wire.frame(Frame.DATA, b"x"), "unexpected DATA frame"),
    "an oversized length": (True, wire.HEADER.pack(wire.MAX_REQUEST + 1, Frame.LIST) + b"x" * 64,
                            f"frame of {wire.MAX_REQUEST + 1} bytes"),
    "a truncated frame": (True, wire.HEADER.pack(100, Frame.LIST) + b"\x00\x62abc", "truncated"),
    "a truncated header": (True, wire.HEADER.pack(2, Frame.LIST)[:3], "truncated"),
    "trailing bytes in a request": (True, wire.frame(Frame.ROOT, wire.pack_bytes(b"a") + b"!"), "trailing"),
    "garbage before the hello": (False, b"GET / HTTP/1.1\r\nHost: mirror\r\n\r\n", "unknown frame type"),
    "a hello with another magic": (False, wire.frame(Frame.HELLO, wire.HELLO.pack(b"RORRIM", 1, bytes(16),
                                                                                   bytes(32))),
                                   "not a mirror client"),
    "a hello of the wrong size": (False, wire.frame(Frame.HELLO, wire.MAGIC + b"\x00\x01"), "bad hello"),
    "a hello cut short": (False, wire.pack_hello(bytes(16), bytes(32))[:40], "truncated"),
    "a request before the handshake": (False, wire.pack_path_request(Frame.LIST, b""), "no hello"),
}


@pytest.mark.parametrize("case", MALFORMED)
def test_a_malformed_frame_closes_its_connection_only_with_a_log_line(tmp_path, serve, case):
    root = secret_tree(tmp_path)
    served = serve(root)
    handshake, data, said = MALFORMED[case]
    bystander = served.connect()  # another client's connection, open all along

    client = RawClient(served)
    if handshake:
        client.handshake()
    client.send(data)

    assert client.closed(), "the server kept the connection open"
    assert served.logged(r"client 127\.0\.0\.1: protocol error: .*" + re.escape(said) + ".*; connection closed"), \
        served.lines
    assert exchange(bystander, request(Frame.ROOT, b""))[0][0][0] is Frame.ENTRY
    bystander.close()
    assert pull(served.address()) == local_tree(root)


def test_a_client_that_connects_and_leaves_costs_nothing(tmp_path, serve):
    root = secret_tree(tmp_path)
    served = serve(root)
    for _ in range(5):
        socket.create_connection((served.host, served.port)).close()

    assert pull(served.address()) == local_tree(root)
    # (the serve fixture fails the test if a handler thread died of it)


def test_another_protocol_version_gets_an_error_then_the_connection_is_closed(tmp_path, serve):
    root = secret_tree(tmp_path)
    served = serve(root)
    client = RawClient(served)
    client.send(wire.frame(Frame.HELLO, wire.HELLO.pack(wire.MAGIC, 2, bytes(16), bytes(32))))

    code, payload = client.read_frame()
    assert code == Frame.ERROR
    number, message = wire.parse_error(payload)
    assert number == errno.EPROTONOSUPPORT and "version 2" in message and "speaks 1" in message
    assert client.closed()
    assert served.logged("client 127.0.0.1: .*version 2"), served.lines
    assert pull(served.address()) == local_tree(root)


FUZZ_PATHS = st.sampled_from([b"", b"a", b"a/b.txt", b"top.txt", b"a/deep/big.bin", b"outlink",
                              b"outlink/secret.txt", b"leak", b"rel-leak", b"a/up/secret.txt",
                              b"..", b"../outside/secret.txt", b"/etc/passwd", b"a/\0", b"a//b.txt"])
FUZZ_FRAMES = st.one_of(
    st.builds(wire.pack_path_request, st.sampled_from([Frame.ROOT, Frame.LIST, Frame.DIGEST]), FUZZ_PATHS),
    st.builds(lambda path, offset, length, expect: wire.pack_read(Read(path, offset, length, expect)),
              FUZZ_PATHS, st.integers(0, 2**64 - 1), st.integers(0, 2**64 - 1),
              st.one_of(st.none(), st.tuples(st.integers(0, 2**64 - 1), st.integers(-2**63, 2**63 - 1),
                                              st.integers(-2**63, 2**63 - 1)))),
    st.builds(lambda code, payload: wire.HEADER.pack(len(payload), code) + payload,
              st.integers(0, 255), st.binary(max_size=40)),
    st.binary(min_size=1, max_size=12),
)
CLIENT_BYTES = st.one_of(
    st.binary(max_size=200),
    st.lists(FUZZ_FRAMES, max_size=6).map(lambda frames: wire.pack_hello(bytes(16), bytes(32)) + b"".join(frames)),
)


def test_random_bytes_from_clients_never_crash_the_server_nor_leak(tmp_path, serve):
    root = secret_tree(tmp_path)
    served = serve(root)

    @settings(max_examples=120, deadline=None, suppress_health_check=list(HealthCheck))
    @given(data=CLIENT_BYTES)
    def one_connection(data):
        client = RawClient(served)
        client.send(data)
        assert client.closed(), "the server kept the connection open"
        assert SECRET not in client.received and INNER not in client.received

    one_connection()
    assert pull(served.address()) == local_tree(root)


# -- 4. authentication ----------------------------------------------------------------------

def test_a_wrong_proof_is_refused_and_the_token_never_crosses_the_wire(tmp_path, serve):
    root = secret_tree(tmp_path)
    served = serve(root, token=TOKEN)

    right = RawClient(served)
    flags, server_nonce = right.hello()
    assert flags & wire.AUTH_REQUIRED
    right.send(wire.frame(Frame.AUTH, wire.proof(TOKEN, b"client", server_nonce, right.nonce)))
    code, answer = right.read_frame()
    assert code == Frame.READY and wire.check_proof(TOKEN, b"server", right.nonce, server_nonce, answer)
    right.send(request(Frame.LIST, b""))
    while right.read_frame()[0] != Frame.END:
        pass

    wrong = RawClient(served)
    _, server_nonce = wrong.hello()
    wrong.send(wire.frame(Frame.AUTH, wire.proof(b"a wrong token", b"client", server_nonce, wrong.nonce)))
    code, payload = wrong.read_frame()
    assert code == Frame.ERROR and wire.parse_error(payload)[0] == errno.EACCES
    assert wrong.closed()
    assert served.logged("client 127.0.0.1: authentication failed")

    mirrored = RawClient(served)  # the server's own proof for these nonces, sent back as a client's
    _, server_nonce = mirrored.hello()
    mirrored.send(wire.frame(Frame.AUTH, wire.proof(TOKEN, b"server", mirrored.nonce, server_nonce)))
    assert mirrored.read_frame()[0] == Frame.ERROR and mirrored.closed()

    right.closed()
    for client in (right, wrong, mirrored):
        assert TOKEN not in client.received
    assert pull(served.address(token=TOKEN)) == local_tree(root)


def test_without_the_token_a_client_gets_an_error_and_nothing_else(tmp_path, serve):
    served = serve(secret_tree(tmp_path), token=TOKEN)

    with pytest.raises(Refused) as no_token:
        served.connect()
    with pytest.raises(Refused) as wrong_token:
        served.connect(token=b"not " + TOKEN)
    skipper = RawClient(served)  # no AUTH at all: a request where the proof belongs
    skipper.hello()
    skipper.send(request(Frame.ROOT, b""))
    code, payload = skipper.read_frame()

    assert no_token.value.errno == errno.EACCES and "token" in no_token.value.strerror
    assert wrong_token.value.errno == errno.EACCES and "authentication failed" in wrong_token.value.strerror
    assert code == Frame.ERROR and wire.parse_error(payload)[0] == errno.EACCES
    before = len(skipper.received)
    assert skipper.closed() and len(skipper.received) == before  # the ERROR, then nothing
    assert TOKEN not in skipper.received
    assert served.logged("client 127.0.0.1: authentication failed")


def test_the_client_never_sends_the_token_and_distrusts_a_server_without_it():
    listener = socket.create_server(("127.0.0.1", 0))
    heard = bytearray()

    def impostor():
        sock, _ = listener.accept()
        with sock:
            heard.extend(sock.recv(wire.HEADER.size + wire.HELLO.size, socket.MSG_WAITALL))
            sock.sendall(wire.frame(Frame.WELCOME, wire.WELCOME.pack(wire.MAGIC, wire.VERSION,
                                                                     wire.AUTH_REQUIRED, os.urandom(32))))
            heard.extend(sock.recv(wire.HEADER.size + wire.MAC, socket.MSG_WAITALL))
            sock.sendall(wire.frame(Frame.READY, bytes(wire.MAC)))  # a proof it cannot make
            sock.settimeout(5)
            while chunk := sock.recv(4096):
                heard.extend(chunk)

    thread = threading.Thread(target=impostor, daemon=True)
    thread.start()
    with pytest.raises(Refused, match="could not prove"):
        Connection(Address("127.0.0.1", listener.getsockname()[1], b"", TOKEN))
    thread.join(10)
    listener.close()

    assert len(heard) == 2 * wire.HEADER.size + wire.HELLO.size + wire.MAC  # hello and proof, no more
    assert TOKEN not in heard


# -- 5. limits ------------------------------------------------------------------------------

class FakeClock:
    def __init__(self) -> None:
        self.now, self.slept = 1000.0, []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def test_the_rate_limit_lets_a_burst_through_then_makes_requests_wait():
    clock = FakeClock()
    limit = RateLimit(10, clock=clock, sleep=clock.sleep)

    for _ in range(10):
        limit.take()
    assert clock.slept == []                      # a burst of `rate` requests passes at once
    limit.take()
    assert clock.slept == [pytest.approx(0.1)]    # the next waits for one request's worth
    clock.now += 0.5                              # half a second of quiet: five more at once
    for _ in range(5):
        limit.take()
    assert len(clock.slept) == 1
    limit.take()
    assert clock.slept[1:] == [pytest.approx(0.1)]
    clock.now += 3600                             # a long quiet: still no more than a burst
    for _ in range(10):
        limit.take()
    assert len(clock.slept) == 2
    limit.take()
    assert len(clock.slept) == 3


def test_an_idle_connection_is_closed_after_idle_s_with_a_log_line(tmp_path, serve):
    root = secret_tree(tmp_path)
    served = serve(root, idle_s=0.5)
    conn = served.connect()
    conn.sock.settimeout(5)  # not the client's own two minutes
    started = time.monotonic()

    with pytest.raises(EOFError):
        conn.read()
    waited = time.monotonic() - started
    conn.close()

    assert 0.4 < waited < 5, waited
    assert served.logged("client 127.0.0.1: silent for too long; connection closed")
    assert pull(served.address()) == local_tree(root)  # a busy client is not idle


def test_a_client_dripping_its_hello_is_cut_when_the_handshake_time_is_up(tmp_path, serve, monkeypatch):
    """The handshake has HANDSHAKE_S in all, not per byte: a peer sending a byte now and then
    (slowloris) must not hold a connection and its thread for minutes before saying who it is."""
    monkeypatch.setattr(server_module, "HANDSHAKE_S", 1.0)
    served = serve(secret_tree(tmp_path))
    client = RawClient(served)
    started, cut = time.monotonic(), None

    for byte in wire.pack_hello(bytes(16), bytes(32))[:-1]:  # one byte every 0.2 s, never all
        client.send(bytes([byte]))
        if select.select([client.sock], [], [], 0.2)[0]:
            try:
                closed = not client.sock.recv(1)
            except ConnectionResetError:
                closed = True
            if closed:
                cut = time.monotonic() - started
                break

    assert cut is not None and cut < 3, cut
    assert served.logged("client 127.0.0.1: silent for too long; connection closed")
    client.sock.close()


def test_max_clients_refuses_one_more_run_while_the_others_keep_working(tmp_path, serve):
    root = secret_tree(tmp_path)
    served = serve(root, max_clients=2)
    first_run, second_run = os.urandom(16), os.urandom(16)
    first, second = served.connect(session=first_run), served.connect(session=second_run)

    with pytest.raises(Refused) as busy:
        served.connect()
    worker = served.connect(session=first_run)  # another connection of a run already in

    assert busy.value.errno == errno.EBUSY
    assert served.logged("client 127.0.0.1: refused, 2 clients already")
    for conn in (first, second, worker):
        assert exchange(conn, request(Frame.ROOT, b""))[0][0][0] is Frame.ENTRY
    hang_up(second)
    deadline = time.monotonic() + 5
    while True:  # the server sees the close when its handler thread ends
        try:
            third = served.connect()
            break
        except Refused:
            assert time.monotonic() < deadline, "a place freed was never given again"
            time.sleep(0.05)
    assert exchange(third, request(Frame.ROOT, b""))[0][0][0] is Frame.ENTRY
    for conn in (first, worker, third):
        conn.close()


def hang_up(conn: Connection) -> None:
    """Close a Connection for sure (see the test below: close() alone leaves it open)."""
    try:
        conn.sock.shutdown(socket.SHUT_RDWR)
    except OSError:  # the server closed it first
        pass
    conn.close()


def test_a_closed_connection_is_hung_up_at_once(tmp_path, serve):
    """Connection.close() ends the TCP connection, even while the Connection object lives on
    (a RemoteFile handle keeps one): the server then frees that client's place."""
    served = serve(secret_tree(tmp_path), max_clients=1)
    conn = served.connect()

    conn.close()

    deadline = time.monotonic() + 3
    while True:
        try:
            other = served.connect()
            break
        except Refused:
            assert time.monotonic() < deadline, "the server still sees the closed connection"
            time.sleep(0.05)
    other.close()
    del other, conn


# -- 6. a hostile server ----------------------------------------------------------------------

class Listed(NamedTuple):
    mode: int
    size: int = 0
    mtime_ns: int = 1_600_000_000_000_000_000
    ctime_ns: int = 1_600_000_000_000_000_000
    atime_ns: int = 1_600_000_000_000_000_000
    uid: int = os.getuid()
    gid: int = os.getgid()
    ino: int = 1
    dev: int = 1
    nlink: int = 1
    rdev: int = 0
    target: bytes | None = None


FOLDER = Listed(stat.S_IFDIR | 0o755)
PWNED = b"pwned by a hostile server"


def regular(size: int) -> Listed:
    return Listed(stat.S_IFREG | 0o644, size)


def file_reply(size: int, data: bytes, sent: int | None = None, unchanged: bool = True) -> bytes:
    return (wire.frame(Frame.FILE, wire.pack_stat(regular(size))) + wire.frame(Frame.DATA, data)
            + wire.pack_eof(unchanged, len(data) if sent is None else sent))


def listing(*items: tuple[bytes, Listed]) -> bytes:
    return wire.pack_entries(list(items)) + wire.frame(Frame.END)


class Cut(bytes):
    """A reply after which HostileServer hangs up (a server that dies mid-frame)."""


class HostileServer:
    """Does the handshake right, then answers LIST with `listings` (END for a folder it does not
    know) and READ with `reads` (a PWNED file of the listed size for a path it does not know);
    a Cut reply closes the connection once sent."""

    def __init__(self, listings: dict[bytes, bytes], reads: dict[bytes, bytes]) -> None:
        self.listings, self.reads = listings, reads
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self.accept, daemon=True).start()

    def accept(self) -> None:
        while True:
            try:
                sock, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self.answer, args=(sock,), daemon=True).start()

    def answer(self, sock: socket.socket) -> None:
        with sock:
            try:
                stream = sock.makefile("rb")
                stream.read(wire.HEADER.size + wire.HELLO.size)
                sock.sendall(wire.frame(Frame.WELCOME, wire.WELCOME.pack(wire.MAGIC, wire.VERSION, 0, os.urandom(32)))
                             + wire.frame(Frame.READY))
                while len(header := stream.read(wire.HEADER.size)) == wire.HEADER.size:
                    length, code = wire.HEADER.unpack(header)
                    path = wire.Reader(stream.read(length)).bytes()
                    if code == Frame.ROOT:
                        reply = wire.frame(Frame.ENTRY, wire.pack_stat(FOLDER))
                    elif code == Frame.LIST:
                        reply = self.listings.get(path, wire.frame(Frame.END))
                    elif code == Frame.READ:
                        reply = self.reads.get(path, file_reply(len(PWNED), PWNED))
                    else:
                        reply = wire.pack_error(errno.EIO, "no digests here")
                    sock.sendall(reply)
                    if isinstance(reply, Cut):  # the reader made by makefile keeps it open
                        sock.shutdown(socket.SHUT_RDWR)
                        return
            except OSError:
                pass

    def close(self) -> None:
        self.listener.shutdown(socket.SHUT_RDWR)
        self.listener.close()


BIG = wire.DATA_FRAME + 4096
# A DATA frame longer than the client's buffer whose tail is an EOF frame: read as one frame
# it is plain data; read as 1 MiB of data and then frames, the file ends early and looks whole.
OVERSIZED_DATA = b"A" * wire.DATA_FRAME + wire.pack_eof(True, BIG) + b"B" * (4096 - 14)

HOSTILE = {
    # name: (listings, reads)
    "a folder named ..": ({b"": listing((b"..", FOLDER)), b"..": listing((b"pwned", regular(len(PWNED))))}, {}),
    "a folder named .": ({b"": listing((b".", FOLDER)), b".": listing((b"pwned", regular(len(PWNED))))}, {}),
    "a name with a slash": ({b"": listing((b"../sentinel/pwned", regular(len(PWNED))))}, {}),
    "a name with a slash inside": ({b"": listing((b"a", FOLDER), (b"a/pwned", regular(len(PWNED))))}, {}),
    "a name with a NUL": ({b"": listing((b"pwned\0x", regular(len(PWNED))))}, {}),
    "an empty name": ({b"": listing((b"", regular(len(PWNED))))}, {}),
    "a 300-byte name": ({b"": listing((b"p" * 300, regular(len(PWNED))))}, {}),
    "a link target with a NUL": ({b"": listing((b"pwned", Listed(stat.S_IFLNK | 0o777, target=b"/tmp\0x")))}, {}),
    "an empty link target": ({b"": listing((b"pwned", Listed(stat.S_IFLNK | 0o777, target=b"")))}, {}),
    "a name listed twice": ({b"": listing((b"pwned", regular(len(PWNED))), (b"pwned", FOLDER))}, {}),
    "an unknown file type": ({b"": listing((b"pwned", Listed(0o030644)))}, {}),
    "a size of 2**63": ({b"": listing((b"pwned", regular(2**63)))}, {}),
    "data beyond the file's size": ({b"": listing((b"f", regular(5)))}, {b"f": file_reply(5, b"0123456789")}),
    "an EOF counting more than was sent": ({b"": listing((b"f", regular(5)))},
                                           {b"f": file_reply(5, b"01234", sent=7)}),
    "an EOF counting less than was sent": ({b"": listing((b"f", regular(5)))},
                                           {b"f": file_reply(5, b"01234", sent=3)}),
    "an EOF saying whole after less than the size": ({b"": listing((b"f", regular(10)))},
                                                     {b"f": file_reply(10, b"01234")}),
    "a DATA frame over 1 MiB": ({b"": listing((b"f", regular(BIG)))}, {b"f": file_reply(BIG, OVERSIZED_DATA)}),
}


def files_below(folder: Path) -> dict[str, str | None]:
    """Every path below `folder`: a file's content's digest (None for the rest), so that a
    failure shows names and digests, not megabytes."""
    found = {}
    for dirpath, dirnames, filenames in os.walk(folder):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            regular = os.path.isfile(path) and not os.path.islink(path)
            found[os.path.relpath(path, folder)] = digest(Path(path).read_bytes()) if regular else None
    return found


def digest(data: bytes) -> str:
    return f"{len(data)} bytes, sha256 {hashlib.sha256(data).hexdigest()[:16]}" + (
        ", holding PWNED" if PWNED in data else "")


@pytest.mark.parametrize("case", HOSTILE)
def test_a_hostile_server_cannot_make_the_client_write_outside_dst(tmp_path, case):
    listings, reads = HOSTILE[case]
    server = HostileServer(listings, reads)
    (tmp_path / "sentinel").mkdir()
    dst = tmp_path / "dst"
    try:
        result = subprocess.run([sys.executable, "-m", "mirror", "copy", f"mirror://127.0.0.1:{server.port}/",
                                 str(dst), "--jobs", "2"], capture_output=True, text=True, timeout=60,
                                cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(REPO)})
    finally:
        server.close()

    assert result.returncode != 0, (result.stdout, result.stderr)
    assert result.stderr.strip() and "Traceback" not in result.stderr + result.stdout, result.stderr
    assert os.listdir(tmp_path / "sentinel") == []
    everything = files_below(tmp_path)
    assert not any("PWNED" in (content or "") or "pwned" in path for path, content in everything.items()), everything
    assert set(everything) <= {"sentinel", "dst", "dst/f"}, everything
    if "dst/f" in everything:  # a copy that failed leaves nothing; one kept is what was sent
        assert case == "a DATA frame over 1 MiB" and everything["dst/f"] == digest(OVERSIZED_DATA), everything


# -- 7. load --------------------------------------------------------------------------------

SERVER_SCRIPT = """
import sys
from mirror.remote.server import Server
log = lambda line: print(line, file=sys.stderr, flush=True)
server = Server(sys.argv[1], port=0, max_clients=100, idle_s=float(sys.argv[2]), log=log)
host, port = server.listen()
log(f"serving on {host}:{port}")
server.serve_forever()
"""
CLIENTS = 64
STALL_READS = 400
IDLE_S = 120.0  # longer than the test: the stalled client is still there when the others finish
# The server holds, per connection, a 64 KiB read buffer, at most 256 KiB of replies gathered
# (small files read whole) or a 1 MiB frame header and a sendfile (no copy), a listing of this
# small tree and a thread's stack pages: well under 1 MiB each, so 66 connections need less than
# 64 MiB more.
# A server that read the stalled client's 400 pipelined requests ahead and queued their replies
# (400 x 4 MiB) would need far more.
RSS_BOUND = 64 << 20


def rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def load_tree(tmp_path: Path) -> Path:
    spec = {f"d{i % 4}/f{i}": os.urandom(1000 * (i + 1)) for i in range(40)}
    spec.update({"big.bin": os.urandom(4 << 20), "d1/mid.bin": os.urandom(300 << 10),
                 "d2/empty": b"", "link": Link("d1/mid.bin"), "out": Link("/etc")})
    build(tmp_path / "load", spec)
    return tmp_path / "load"


@pytest.mark.timeout(120)
def test_64_clients_at_once_all_pull_the_tree_while_one_never_reads(tmp_path):
    root = load_tree(tmp_path)
    expected = local_tree(root)
    server = subprocess.Popen([sys.executable, "-c", SERVER_SCRIPT, str(root), str(IDLE_S)],
                              stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    lines: list[tuple[float, str]] = []
    try:
        port = int(re.search(r"on 127\.0\.0\.1:(\d+)", server.stderr.readline()).group(1))
        threading.Thread(target=lambda: [lines.append((time.monotonic(), line)) for line in server.stderr],
                         daemon=True).start()

        def address() -> Address:
            return Address("127.0.0.1", port, b"", None, None, os.urandom(wire.SESSION))

        assert pull(address()) == expected  # warm: everything the server imports is in
        baseline = rss(server.pid)

        stalled = Connection(address())  # asks for 400 x 4 MiB and never reads a byte
        stalled.send(b"".join(request(Frame.READ, b"big.bin") for _ in range(STALL_READS)))

        peak, sampling = [baseline], True

        def sample():
            while sampling:
                peak.append(rss(server.pid))
                time.sleep(0.02)

        results, finished = [None] * CLIENTS, [0.0] * CLIENTS

        def client(number: int) -> None:
            try:
                results[number] = pull(address())
            except BaseException as error:  # shown in the assertion below
                results[number] = error
            finished[number] = time.monotonic()

        sampler = threading.Thread(target=sample)
        sampler.start()
        clients = [threading.Thread(target=client, args=(number,)) for number in range(CLIENTS)]
        for thread in clients:
            thread.start()
        for thread in clients:
            thread.join(90)
        sampling = False
        sampler.join()

        wrong = [number for number, result in enumerate(results) if result != expected]
        assert not wrong, f"{len(wrong)} of {CLIENTS} clients got a wrong tree, e.g. {results[wrong[0]]!r:.300}"
        assert all(finished) and not any("closed" in line for _, line in lines), lines  # the stalled
        # connection was never cut: nobody waited for that
        assert max(peak) - baseline < RSS_BOUND, f"server grew by {(max(peak) - baseline) >> 20} MiB"
        hang_up(stalled)
        assert server.poll() is None and pull(address()) == expected
    finally:
        server.terminate()
        server.wait(10)


def test_a_client_that_stops_reading_is_cut_after_idle_s_holding_only_its_buffers(tmp_path, serve):
    root = tmp_path / "root"
    build(root, {"big.bin": os.urandom(4 << 20)})
    served = serve(root, idle_s=0.5)
    stalled = served.connect()

    stalled.send(b"".join(request(Frame.READ, b"big.bin") for _ in range(STALL_READS)))  # 1.6 GB

    assert served.logged("client 127.0.0.1: silent for too long; connection closed", timeout=10)
    stalled.sock.settimeout(10)
    held = 0
    try:
        while chunk := stalled.sock.recv(1 << 20):
            held += len(chunk)
    except ConnectionResetError:
        pass
    hang_up(stalled)
    assert 0 < held < 64 << 20, held  # what the socket buffers took, no more
    assert pull(served.address()) == local_tree(root)


def test_two_remote_trees_in_two_threads_each_get_their_own_bytes(tmp_path, serve):
    """Each RemoteTree reads into a buffer of its own: two trees in two threads of one process
    (a program using the API, this file's load test) must not mix each other's bytes."""
    root = load_tree(tmp_path)
    served = serve(root, max_clients=8)
    expected = local_tree(root)
    results = []

    threads = [threading.Thread(target=lambda: results.append(pull(served.address()))) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)

    assert len(results) == 4 and all(result == expected for result in results)


def closed_soon(sock: socket.socket, within: float) -> bool:
    """The server closed `sock` (EOF or reset) within `within` seconds."""
    if not select.select([sock], [], [], within)[0]:
        return False
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True


def test_one_address_cannot_fill_the_server_with_connections_that_never_log_in(tmp_path, serve, monkeypatch):
    monkeypatch.setattr(server_module, "PENDING_PER_PEER", 4)
    served = serve(secret_tree(tmp_path))
    silent = [socket.create_connection((served.host, served.port)) for _ in range(4)]
    time.sleep(0.2)  # accepted, in their handshake

    one_more = socket.create_connection((served.host, served.port))

    assert closed_soon(one_more, 5)  # refused at once, not held for the handshake's 10 s
    assert served.logged("client 127.0.0.1: refused, 4 connections still in their handshake")
    assert not any(closed_soon(sock, 0) for sock in silent)  # those still wait for their hello
    for sock in silent + [one_more]:
        sock.close()
    deadline = time.monotonic() + 5
    while True:  # once they are gone, the address is welcome again
        try:
            served.connect().close()
            break
        except OSError:
            assert time.monotonic() < deadline, "the address stayed refused"
            time.sleep(0.05)


def test_a_tls_handshake_dripped_a_byte_at_a_time_is_cut_when_the_time_is_up(tmp_path, serve, monkeypatch):
    """HANDSHAKE_S bounds TLS's handshake in all too (CPython's ssl counts its timeout for the
    whole handshake): a guard that this stays true."""
    import ssl
    if subprocess.run(["sh", "-c", "command -v openssl"], capture_output=True).returncode:
        pytest.skip("openssl is not installed: cannot make a certificate")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost",
                    "-keyout", tmp_path / "key.pem", "-out", tmp_path / "cert.pem", "-days", "1"],
                   check=True, capture_output=True)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tmp_path / "cert.pem", tmp_path / "key.pem")
    monkeypatch.setattr(server_module, "HANDSHAKE_S", 1.0)
    served = serve(secret_tree(tmp_path), tls=context)
    sock = socket.create_connection((served.host, served.port))
    hello = bytes.fromhex("16030100a5010000a10303") + os.urandom(160)  # a ClientHello's start
    started, cut = time.monotonic(), None

    for byte in hello:  # one byte every 0.2 s: each recv is quick, the whole never ends
        try:
            sock.sendall(bytes([byte]))
        except OSError:
            cut = time.monotonic() - started
            break
        if closed_soon(sock, 0.2):
            cut = time.monotonic() - started
            break

    assert cut is not None and cut < 5, cut
    assert served.logged("client 127.0.0.1: silent for too long; connection closed")
    sock.close()
