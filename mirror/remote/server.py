"""`mirror serve`: a read-only server of one folder, a thread per connection, every path confined to it."""
from __future__ import annotations

import errno
import ipaddress
import os
import socket
import stat
import threading
import time
from collections.abc import Callable

from ..errors import MirrorError
from ..model import display
from ..paths import split
from ..plan.tree import LocalTree, unchanged
from . import wire
from .stream import Channel
from .wire import Frame, ProtocolError

HANDSHAKE_S = 10.0          # to say hello and prove the token, in all (TLS's handshake too)
PENDING_PER_PEER = 32       # connections of one address not yet through the handshake
IDLE_S = 300.0              # a connection silent this long (or not reading) is closed
RATE = 20_000               # requests a second per connection, in bursts of as many
CONNECTIONS_PER_CLIENT = 256
LINGER_S = 3.0              # a run's master reconnects after its workers start: one log line
SMALL_FILE = 1 << 16        # read at once and sent with its header and end in one send
LIST_FRAME = 1 << 19        # bytes of entries per ENTRIES frame

Log = Callable[[str], None]


class RateLimit:
    """A token bucket: `rate` requests a second on average, `rate` at once at most; a client
    over it is slowed down (its requests wait), not cut off."""

    def __init__(self, rate: float, clock=time.monotonic, sleep=time.sleep) -> None:
        self.rate, self.clock, self.sleep = rate, clock, sleep
        self.tokens, self.last = rate, clock()

    def take(self) -> None:
        now = self.clock()
        self.tokens = min(self.rate, self.tokens + (now - self.last) * self.rate)
        self.last = now
        if self.tokens < 1:
            self.sleep((1 - self.tokens) / self.rate)
            self.tokens, self.last = 1, self.clock()
        self.tokens -= 1


class Session:
    """One client run: its connections (a worker's each) and what they pulled, for the log."""

    def __init__(self, peer: str, key: bytes) -> None:
        self.peer, self.key = peer, key
        self.path: bytes | None = None
        self.connections = self.opened = self.files = self.nbytes = self.errors = 0
        self.started = self.ended = time.monotonic()

    def line(self) -> str:
        pulled = "nothing" if self.path is None else "/" + (display(self.path) if self.path else "")
        return (f"client {self.peer} session {self.key.hex()[:8]}: pulled {pulled}, "
                f"{self.files} files, {self.nbytes} bytes, {self.errors} errors, "
                f"{self.opened} connections, {self.ended - self.started:.1f} s")


class Server:
    """Serves `root` read-only to clients of the mirror protocol (docs/protocol.md)."""

    def __init__(self, root: str | bytes, bind: str = "127.0.0.1", port: int = 8730,
                 token: bytes | None = None, tls=None, max_clients: int = 16,
                 log: Log = print, idle_s: float = IDLE_S, rate: float = RATE) -> None:
        self.root = os.path.abspath(os.fsencode(root))
        try:
            if not stat.S_ISDIR(os.stat(self.root).st_mode):
                raise MirrorError(f"{display(self.root)} is not a folder")
        except OSError as error:
            raise MirrorError(f"cannot serve {display(self.root)}: {error.strerror}") from None
        if token is None and not is_loopback(bind):
            raise MirrorError(f"--bind {bind} faces a network: give a --token-file "
                              "(only a loopback address may serve without one)")
        if max_clients < 1:
            raise MirrorError("--max-clients must be at least 1")
        self.bind, self.port, self.token, self.tls = bind, port, token, tls
        self.max_clients, self.log, self.idle_s, self.rate = max_clients, log, idle_s, rate
        self.listener: socket.socket | None = None
        self.lock = threading.Lock()
        self.sessions: dict[bytes, Session] = {}
        self.sockets: set[socket.socket] = set()
        self.pending: dict[str, int] = {}  # connections in their handshake, by address
        self.threads: set[threading.Thread] = set()
        self.stopping = False

    def listen(self) -> tuple[str, int]:
        """Bind and listen; the address served (port 0 picks a free one)."""
        family = socket.AF_INET6 if ":" in self.bind else socket.AF_INET
        listener = socket.socket(family, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            listener.bind((self.bind, self.port))
        except OSError as error:
            listener.close()
            raise MirrorError(f"cannot listen on {self.bind}:{self.port}: {error.strerror}") from None
        listener.listen(128)
        self.listener = listener
        return listener.getsockname()[:2]

    def serve_forever(self) -> None:
        """Accept connections until stop() (or a stop signal, which is raised from here)."""
        self.listener.settimeout(LINGER_S / 3)  # to log the runs that ended meanwhile
        try:
            while not self.stopping:
                try:
                    sock, peer = self.listener.accept()
                except socket.timeout:
                    self.log_ended(time.monotonic() - LINGER_S)
                    continue
                except OSError:
                    if self.stopping:
                        break
                    time.sleep(0.05)  # out of descriptors: let connections end
                    continue
                sock.settimeout(None)
                self.admit(sock, peer[0])
        finally:
            self.stop()
            self.log_ended(float("inf"))

    def log_ended(self, before: float) -> None:
        """One line for each run whose last connection closed before `before`."""
        with self.lock:
            ended = [session for session in self.sessions.values()
                     if session.connections == 0 and session.ended < before]
        for session in ended:
            # written, then forgotten: a stop signal between the two must not lose the line
            self.log(session.line())
            with self.lock:
                if self.sessions.get(session.key) is session and not session.connections:
                    del self.sessions[session.key]

    def admit(self, sock: socket.socket, peer: str) -> None:
        with self.lock:
            if len(self.sockets) >= self.max_clients * CONNECTIONS_PER_CLIENT:
                sock.close()
                self.log(f"client {peer}: refused, too many connections")
                return
            if self.pending.get(peer, 0) >= PENDING_PER_PEER:  # one address cannot fill the server
                sock.close()                                    # with connections that never log in
                if self.pending[peer] == PENDING_PER_PEER:
                    self.log(f"client {peer}: refused, {PENDING_PER_PEER} connections still in their handshake")
                    self.pending[peer] += 1  # said once until one of them is through
                return
            self.pending[peer] = self.pending.get(peer, 0) + 1
            self.sockets.add(sock)
            thread = threading.Thread(target=self.handle, args=(sock, peer), daemon=True)
            self.threads.add(thread)
            thread.start()  # under the lock: stop() never finds it in threads unstarted

    def handle(self, raw: socket.socket, peer: str) -> None:
        session, sock, greeting = None, raw, True
        try:
            raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            raw.settimeout(HANDSHAKE_S)  # TLS's handshake: CPython counts it in all, not per byte
            if self.tls is not None:
                sock = self.tls.wrap_socket(raw, server_side=True)
            channel = Channel(sock, HANDSHAKE_S)
            channel.link.deadline = time.monotonic() + HANDSHAKE_S  # in all, not per byte
            session = self.greet(channel, peer)
            channel.link.deadline = None
            greeting = self.greeted(peer)
            if session is not None:
                channel.link.set_timeout(self.idle_s)
                Handler(self, channel, session).run()
        except (ProtocolError, EOFError, OSError) as error:
            if isinstance(error, socket.timeout):
                self.log(f"client {peer}: silent for too long; connection closed")
            elif isinstance(error, ProtocolError):
                self.log(f"client {peer}: protocol error: {error}; connection closed")
            elif isinstance(error, OSError) and not self.stopping and not isinstance(error, ConnectionError):
                self.log(f"client {peer}: {error}; connection closed")  # TLS failed, say
            # EOFError: closed between frames (a probe, a client that gave up): nothing to say
        finally:
            if greeting:
                self.greeted(peer)
            sock.close()
            raw.close()
            with self.lock:
                self.sockets.discard(raw)
                self.threads.discard(threading.current_thread())
                if session is not None:
                    session.connections -= 1
                    session.ended = time.monotonic()

    def greeted(self, peer: str) -> bool:
        """One connection of `peer` is through its handshake (or gone): no longer pending."""
        with self.lock:
            left = min(self.pending.get(peer, 1), PENDING_PER_PEER) - 1
            if left > 0:
                self.pending[peer] = left
            else:
                self.pending.pop(peer, None)
        return False

    def greet(self, channel: Channel, peer: str) -> Session | None:
        """Hello, the token's proof both ways, and a place among the clients; None if refused."""
        kind, payload = channel.read(wire.MAX_REQUEST)
        if kind is not Frame.HELLO:
            raise ProtocolError("no hello")
        version, key, client_nonce = wire.parse_hello(payload)
        if version != wire.VERSION:
            channel.send(wire.pack_error(errno.EPROTONOSUPPORT, f"protocol version {version} is not "
                                         f"supported (this server speaks {wire.VERSION})"))
            self.log(f"client {peer}: refused, protocol version {version} (this server speaks {wire.VERSION})")
            return None
        nonce = os.urandom(wire.NONCE)
        flags = wire.AUTH_REQUIRED if self.token is not None else 0
        channel.send(wire.frame(Frame.WELCOME, wire.WELCOME.pack(wire.MAGIC, wire.VERSION, flags, nonce)))
        answer = b""
        if self.token is not None:
            kind, mac = channel.read(wire.MAX_REQUEST)
            if kind is not Frame.AUTH or not wire.check_proof(self.token, b"client", nonce, client_nonce, mac):
                channel.send(wire.pack_error(errno.EACCES, "authentication failed: wrong token"))
                self.log(f"client {peer}: authentication failed")
                return None
            answer = wire.proof(self.token, b"server", client_nonce, nonce)
        with self.lock:
            session = self.sessions.get(key)
            active = sum(1 for other in self.sessions.values() if other.connections)
            if session is None and active >= self.max_clients:
                busy = True
            elif session is not None and session.connections >= CONNECTIONS_PER_CLIENT:
                busy = True
            else:
                busy = False
                if session is None:
                    session = self.sessions[key] = Session(peer, key)
                session.connections += 1
                session.opened += 1
        if busy:
            channel.send(wire.pack_error(errno.EBUSY, f"server busy: {self.max_clients} clients at once"))
            self.log(f"client {peer}: refused, {self.max_clients} clients already")
            return None
        channel.send(wire.frame(Frame.READY, answer))
        return session

    def stop(self) -> None:
        """Stop accepting, cut every connection and wait (briefly) for their threads."""
        with self.lock:
            self.stopping = True
            sockets, threads = list(self.sockets), list(self.threads)
        if self.listener is not None:
            self.listener.close()
        for sock in sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        deadline = time.monotonic() + 5
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


class Handler:
    """Answers one connection's requests in order, each path opened below the root one folder
    at a time with O_NOFOLLOW (LocalTree): no name, link or `..` leads outside it."""

    def __init__(self, server: Server, channel: Channel, session: Session) -> None:
        self.server, self.channel, self.session = server, channel, session
        self.tree = LocalTree(server.root)
        self.limit = RateLimit(server.rate)

    def run(self) -> None:
        try:
            while True:
                if not self.channel.link.has_frame():  # nothing more to answer at once
                    self.channel.flush()
                try:
                    kind, payload = self.channel.read(wire.MAX_REQUEST)
                except EOFError:
                    return
                self.limit.take()
                request = wire.parse_request(kind, payload)
                try:
                    if kind is Frame.READ:
                        self.read(request)
                    elif kind is Frame.LIST:
                        self.list(request)
                    elif kind is Frame.ROOT:
                        self.root(request)
                    else:
                        self.digest(request)
                except OSError as error:
                    if error.errno is None or isinstance(error, (ConnectionError, socket.timeout)):
                        raise  # the connection itself failed
                    self.session.errors += 1
                    self.channel.queue(wire.pack_error(error.errno, error.strerror or str(error)))
        finally:
            self.tree.close()

    def root(self, path: bytes) -> None:
        st = os.fstat(self.tree.folder(path))
        if self.session.path is None:
            self.session.path = path
        self.channel.queue(wire.frame(Frame.ENTRY, wire.pack_stat(entry_of(path, st))))

    def list(self, path: bytes) -> None:
        """ENTRIES frames sent as they fill (no error can follow the listing itself), END."""
        items, size = [], 0
        for name, st in self.tree.list(path).items():
            try:
                entry = self.tree.entry(path, name, st)
            except OSError:  # a link that changed while listed: as if not there yet
                continue
            if entry is None:
                continue
            items.append((name, entry))
            size += len(name) + len(entry.target or b"") + 80
            if size >= LIST_FRAME:
                self.channel.queue(wire.pack_entries(items))
                items, size = [], 0
        self.channel.queue((wire.pack_entries(items) if items else b"") + wire.frame(Frame.END))

    def regular(self, path: bytes) -> None:
        """Refuse anything but a regular file before it is opened: opening a FIFO or a device
        (a watchdog, a tape) acts on its own, and reading /dev/zero never ends. A client may
        name any path; a local run only opens what it listed as a file."""
        parent, name = split(path)
        mode = os.stat(name, dir_fd=self.tree.folder(parent), follow_symlinks=False).st_mode
        if not stat.S_ISREG(mode):
            raise OSError(errno.ELOOP if stat.S_ISLNK(mode) else errno.EINVAL, "not a regular file")

    def read(self, request: wire.Read) -> None:
        self.regular(request.path)
        fd, entry = self.tree.open(request.path, None)
        try:
            size = request.expect[0] if request.expect else entry.size
            count = max(0, min(request.length, size - request.offset))
            head = wire.frame(Frame.FILE, wire.pack_stat(entry))
            data = b""
            if count <= wire.DATA_FRAME and (count <= SMALL_FILE or not self.channel.plain):
                data = os.pread(fd, count, request.offset) if count else b""
                sent = len(data)
            else:
                self.channel.send(head)
                head, sent = b"", self.send_big(fd, request.offset, count)
            before = request.expect or (entry.size, entry.mtime_ns, entry.ctime_ns)
            same = sent == count and unchanged(entry._replace(
                size=before[0], mtime_ns=before[1], ctime_ns=before[2]), os.fstat(fd))
        finally:
            os.close(fd)
        end = wire.pack_eof(same, sent)
        if data:  # a small file: its stat, data and end in one part of one send
            self.channel.queue(head + wire.HEADER.pack(len(data), Frame.DATA), data, end)
        else:
            self.channel.queue(head + end)
        self.session.files += 1
        self.session.nbytes += sent

    def send_big(self, fd: int, offset: int, count: int) -> int:
        """DATA frames of DATA_FRAME bytes by sendfile (no copy through Python); a file that
        shrank meanwhile has its frame filled up with zeros and is reported as changed."""
        sent = 0
        while sent < count:
            chunk = min(wire.DATA_FRAME, count - sent)
            self.channel.send(wire.HEADER.pack(chunk, Frame.DATA))
            try:
                done = self.channel.link.sendfile(fd, offset + sent, chunk)
            except OSError as error:  # the frame is cut: only closing keeps the stream whole
                if isinstance(error, (ConnectionError, socket.timeout)):
                    raise
                raise ConnectionAbortedError(error.errno, f"reading failed: {error.strerror}") from None
            if done < chunk:
                self.channel.send(bytes(chunk - done))
                return sent + done
            sent += chunk
        return sent

    def digest(self, path: bytes) -> None:
        self.regular(path)
        self.channel.flush()  # hashing a big file takes a while: the replies before it go first
        self.channel.queue(wire.frame(Frame.HASH, self.tree.digest(path)))


def entry_of(path: bytes, st: os.stat_result):
    from ..plan.scan import entry_from_stat
    return entry_from_stat(path, st)
