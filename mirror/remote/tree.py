"""RemoteTree: a SourceTree served by `mirror serve`, read over one pipelined connection per process."""
from __future__ import annotations

import os
import time
from stat import S_ISREG
from collections import deque
from collections.abc import Iterable

from ..model import Entry, SourceError
from ..paths import join
from ..plan.scan import entry_from_stat
from . import wire
from ..run.fastcopy import preallocate
from .connection import Address, Connection, HandshakeFailed, lost, read_reply, skip_file
from .stream import WriteFailed
from .stripes import STRIPE_MIN, Helpers, abandon, finish, first_length, stripes
from .wire import Frame, ProtocolError

# Replies asked for ahead of use: at least one bandwidth-delay product per connection (1 Gbit/s
# x 50 ms is 6 MB), counted in bytes, so that many small files cost no round trip each; the
# requests themselves stay far below a socket's buffers, so neither end ever blocks on sending
# while the other does too.
WINDOW_BYTES = 16 << 20
REQUEST_BYTES = 48 << 10
# Reads are asked for again once this much of the window (and a quarter of the requests'
# budget) is free, not after every file: one send, and one segment for the server and any hop
# between to handle, for dozens of files.
REFILL_BYTES = 2 << 20
REPLY_OVERHEAD = 128          # bytes of frames around a file's data
DOWN_S = 2.0                  # after a failed connect, fail at once for this long
FRESH_S = 60.0                # a connection idle this long is opened again before use
CARRIED_MOST = 1000           # entries of the root's listing handed to the workers with the tree
PROCESS = [os.getpid()]       # this process's id, kept by a fork hook: no getpid() a file
os.register_at_fork(after_in_child=lambda: PROCESS.__setitem__(0, os.getpid()))


class Pending:
    """A request sent (or to send) whose reply is read in turn; replies come in request order."""

    __slots__ = ("kind", "path", "size", "data", "listed")

    def __init__(self, kind: Frame, path: bytes, size: int, data: bytes, listed: Entry | None = None):
        self.kind, self.path, self.size, self.data, self.listed = kind, path, size, data, listed


class RemoteFile:
    """An opened remote file: its reply's data frames are read from `conn` by receive()."""

    __slots__ = ("conn", "path", "request", "done", "same")

    def __init__(self, conn: Connection, path: bytes, request: Pending | None) -> None:
        self.conn, self.path, self.request = conn, path, request  # request: None on the side
        self.done = self.same = False


class RemoteTree:
    """The tree at mirror://HOST:PORT/PATH. Picklable: each process opens its own connection
    when it first reads (a forked copy never uses its parent's)."""

    def __init__(self, address: Address, carried: dict | None = None) -> None:
        self.address = address
        self.path = address.url.rstrip(b"/")
        self.base = address.path
        self.pid = -1
        self.conn: Connection | None = None
        self.side: Connection | None = None   # for the odd request out of turn
        self.sent: deque[Pending] = deque()
        self.unsent: deque[Pending] = deque()
        self.ready: dict[tuple[Frame, bytes], object] = {}
        # the root's listing, asked with ROOT by the master: whichever worker lists the root (and
        # sync's check for an empty SRC) has it without a round trip
        self.carried: dict[tuple[Frame, bytes], object] = carried or {}
        self.in_flight = self.request_bytes = 0
        self.down: tuple[OSError, float] | None = None
        self.helpers = Helpers(address)  # extra connections for big files
        self.root_entry: Entry | None = None
        self.last_used = 0.0

    def __reduce__(self):
        return RemoteTree, (self.address, self.carried)

    # -- SourceTree -----------------------------------------------------------------------

    round_trips = True  # every read waits for the server: the runner hands out bigger tasks

    def root(self) -> Entry:
        if self.root_entry is None:  # asked by the checks, then by the run: one round trip
            idle = not (self.sent or self.unsent or self.carried)
            if idle:  # the root's listing comes in the same round trip
                self.connection(b"")
                asked = [Pending(kind, b"", 0, wire.pack_path_request(kind, self.remote(b"")))
                         for kind in (Frame.ROOT, Frame.LIST)]
                self.send(asked)
                self.sent.extend(asked)
            self.root_entry = entry_from_stat(b"", self.ask(Frame.ROOT, b""))
            if idle:
                self.carry()
        return self.root_entry

    def carry(self) -> None:
        """Read the root's listing asked with ROOT, to go to the workers with the tree; one of
        more than CARRIED_MOST entries is left to them (and the connection, mid-reply, closed)."""
        request = self.sent.popleft()
        try:
            listing = read_reply(self.conn, Frame.LIST, CARRIED_MOST)
        except (OSError, ProtocolError, EOFError) as error:
            self.broken(error, b"")  # the worker that lists the root says why
            return
        if listing is None:
            self.reset()
            return
        self.replied(request)
        self.carried[(Frame.LIST, b"")] = listing

    def list(self, rel: bytes) -> dict[bytes, wire.RemoteStat]:
        return self.ask(Frame.LIST, rel)

    def entry(self, rel: bytes, name: bytes, st: wire.RemoteStat) -> Entry | None:
        return entry_from_stat(join(rel, name), st, st.target)

    def digest(self, path: bytes) -> bytes:
        return self.ask(Frame.DIGEST, path)

    def open(self, path: bytes, listed: Entry | None) -> tuple[RemoteFile, Entry]:
        conn = self.connection(path)
        pending = self.find_read(path)
        if pending is not None:
            self.turn(pending, path)
        elif self.sent or self.unsent:  # out of turn: the pipeline stays as it is
            conn = self.side_connection(path)
            try:
                conn.send(self.read_request(path, listed).data)
            except (OSError, ProtocolError, EOFError) as error:
                raise self.broken(error, path, conn) from None
        else:
            pending = self.read_request(path, listed)
            self.send([pending])
            self.sent.append(pending)
            self.turn(pending, path)
        try:
            kind, payload = conn.read()
            if kind is Frame.ERROR:
                self.replied(pending)
                raise SourceError(*wire.parse_error(payload), path)
            if kind is not Frame.FILE:
                raise ProtocolError(f"{kind.name} instead of a file")
            st = wire.parse_one_stat(payload)
        except (OSError, ProtocolError, EOFError) as error:
            if isinstance(error, SourceError):
                raise
            raise self.broken(error, path, conn) from None
        if not S_ISREG(st.st_mode):
            raise self.broken(ProtocolError("not a regular file"), path)
        return RemoteFile(conn, path, pending), listed if listed is not None else entry_from_stat(path, st)

    def receive(self, handle: RemoteFile, out: int, size: int, on_bytes) -> int:
        """Write the file's data frames to `out`; at most `size` bytes (a server that sends more
        breaks the protocol). A big file asked for ahead comes in stripes, the first one here."""
        request, running = handle.request, []
        if request is not None and request.listed is not None and size >= STRIPE_MIN:
            parts = stripes(size)
            size = parts[0][1]
            preallocate(out, request.listed.size)
            listed = request.listed
            expect = (listed.size, listed.mtime_ns, listed.ctime_ns)
            running = (self.helpers.take(handle.path, expect, out)
                       or self.helpers.start(handle.path, self.remote(handle.path), expect, parts[1:], out))
        try:
            received = self.receive_stripe(handle, out, size, on_bytes)
        except BaseException:
            abandon(running)
            raise
        if running:
            more, same = finish(running, on_bytes)
            received += more
            handle.same = handle.same and same
        return received

    def receive_stripe(self, handle: RemoteFile, out: int, size: int, on_bytes) -> int:
        conn, received = handle.conn, 0
        while True:
            try:
                kind, length = conn.read_header()
                if kind is Frame.DATA:
                    wire.check_data(length, received, size)
                    conn.payload_to(out, length, received)
                elif kind is Frame.EOF:
                    handle.same, sent = wire.parse_eof(conn.read_exact(length))
                    wire.check_end(handle.same, sent, received, size)
                elif kind is Frame.ERROR:
                    code, message = wire.parse_error(conn.read_exact(length))
                else:
                    raise ProtocolError(f"{kind.name} inside a file")
            except WriteFailed as failed:  # DST's error; the connection, mid-frame, is closed
                raise failed.error from None  # by release()
            except (OSError, ProtocolError, EOFError) as error:
                raise self.broken(error, handle.path, conn) from None
            if kind is Frame.DATA:
                received += length
                on_bytes(length)
                continue
            handle.done = True
            self.replied(handle.request)
            if kind is Frame.ERROR:
                raise SourceError(code, message, handle.path)
            return received

    def copier(self, local):
        return self.receive  # bytes come from the connection, not from a descriptor

    def release(self, handle: RemoteFile) -> None:
        """Done with a file: if its reply was not read to the end, that connection is out of
        step and is closed (reopened when next needed)."""
        if not handle.done:
            if handle.conn is self.side:
                self.side.close()
                self.side = None
            elif handle.conn is self.conn:
                self.reset()

    def is_regular(self, handle: RemoteFile) -> bool:
        return True  # the server checks, and says so in the file's end

    def unchanged(self, handle: RemoteFile, before: Entry) -> bool:
        return handle.same

    def prefetch(self, folders: Iterable[bytes] = (), files: Iterable[Entry] = ()) -> None:
        """Ask now for what will be read next: the listings of `folders`, then `files`."""
        if self.sent or self.unsent:
            self.ready.clear()  # whatever an earlier task asked for and never read
        try:
            self.connection(b"")
        except OSError:
            return  # each read says why
        files = list(files)
        batch = []
        for rel in folders:
            if (Frame.LIST, rel) not in self.ready and (Frame.LIST, rel) not in self.carried:
                batch.append(Pending(Frame.LIST, rel, 0, wire.pack_path_request(Frame.LIST, self.remote(rel))))
        if batch:
            self.send(batch)
            self.sent.extend(batch)
        self.unsent.extend(self.read_request(entry.path, entry) for entry in files)
        self.fill()
        self.helpers.prepare(files, self.remote)

    def close(self) -> None:
        if self.pid == PROCESS[0]:
            for conn in (self.conn, self.side):
                if conn is not None:
                    conn.close()
            self.helpers.close()
        self.conn = self.side = None
        self.root_entry = None
        self.carried = {}
        self.forget()

    # -- the pipeline ---------------------------------------------------------------------

    def remote(self, rel: bytes) -> bytes:
        return join(self.base, rel) if rel else self.base

    def read_request(self, path: bytes, listed: Entry | None) -> Pending:
        expect = (listed.size, listed.mtime_ns, listed.ctime_ns) if listed is not None else None
        length = first_length(listed.size) if listed is not None else wire.NO_LIMIT
        data = wire.pack_read(wire.Read(self.remote(path), 0, length, expect))
        return Pending(Frame.READ, path, (listed.size if listed else 0) + REPLY_OVERHEAD, data, listed)

    def connection(self, path: bytes) -> Connection:
        if self.pid != PROCESS[0]:  # a fork's copy: the parent's sockets are not ours
            self.conn = self.side = None
            self.helpers = Helpers(self.address)
            self.forget()
            self.pid = PROCESS[0]
        now = time.monotonic()
        if self.conn is not None and not self.sent and now - self.last_used > FRESH_S:
            self.reset()  # the server may have closed it as idle
        self.last_used = now
        if self.conn is None:
            self.conn = self.connect(path)
        return self.conn

    def connect(self, path: bytes) -> Connection:
        if self.down is not None and time.monotonic() < self.down[1]:
            error = self.down[0]
            raise SourceError(error.errno, error.strerror, path)
        try:
            return Connection(self.address, wait=False)  # the first requests go with its hello
        except OSError as error:
            self.down = (error, time.monotonic() + DOWN_S)
            raise SourceError(error.errno, error.strerror, path) from None

    def side_connection(self, path: bytes) -> Connection:
        if self.side is None:
            self.side = self.connect(path)
        return self.side

    def forget(self) -> None:
        self.sent.clear()
        self.unsent.clear()
        self.ready.clear()
        self.in_flight = self.request_bytes = 0

    def reset(self) -> None:
        if self.conn is not None:
            self.conn.close()
        self.conn = None
        self.forget()

    def broken(self, error: BaseException, path: bytes, conn: Connection | None = None) -> SourceError:
        """A connection that failed (the side one if `conn` is it, else the pipeline's) is
        closed; the error is the entry's."""
        if conn is not None and conn is self.side:
            self.side.close()
            self.side = None
        else:
            self.reset()
        if isinstance(error, HandshakeFailed):  # as if its connect had failed
            self.down = (error, time.monotonic() + DOWN_S)
        return lost(error, path)

    def send(self, requests: list[Pending]) -> None:
        for request in requests:
            self.in_flight += request.size
            self.request_bytes += len(request.data)
        try:
            self.conn.send(b"".join(request.data for request in requests))
        except OSError as error:
            raise self.broken(error, requests[0].path) from None

    def fill(self) -> None:
        """Send expected reads while the replies asked for are fewer than WINDOW_BYTES (and
        at least one when nothing is under way); send() counts them."""
        batch, wanted, asked = [], self.in_flight, self.request_bytes
        while self.unsent and (wanted < WINDOW_BYTES or not (self.sent or batch)) and asked < REQUEST_BYTES:
            request = self.unsent.popleft()
            batch.append(request)
            wanted += request.size
            asked += len(request.data)
        if batch:
            self.send(batch)
            self.sent.extend(batch)

    def find_read(self, path: bytes) -> Pending | None:
        for request in self.sent:
            if request.kind is Frame.READ and request.path == path:
                return request
        while self.unsent:  # the reads before it were skipped
            request = self.unsent.popleft()
            if request.path == path:
                self.send([request])
                self.sent.append(request)
                self.fill()
                return request
        return None

    def replied(self, request: Pending | None) -> None:
        if request is not None:
            self.in_flight -= request.size
            self.request_bytes -= len(request.data)
            if not self.sent or (self.in_flight <= WINDOW_BYTES - REFILL_BYTES
                                 and self.request_bytes <= REQUEST_BYTES * 3 // 4):
                self.fill()

    def turn(self, request: Pending, path: bytes) -> None:
        """Read the replies before `request`'s (a listing is kept, a skipped file's data dropped)
        and take `request` off the queue: its reply is next on the connection."""
        try:
            while self.sent[0] is not request:
                ahead = self.sent.popleft()
                if ahead.kind is Frame.READ:
                    skip_file(self.conn, ahead.size)
                else:
                    self.ready[(ahead.kind, ahead.path)] = read_reply(self.conn, ahead.kind)
                self.replied(ahead)
        except (OSError, ProtocolError, EOFError) as error:
            raise self.broken(error, path) from None
        self.sent.popleft()

    def ask(self, kind: Frame, rel: bytes):
        """The reply to a ROOT, LIST or DIGEST request (asked ahead or now); OSError if refused."""
        result = self.ready.pop((kind, rel), None)
        if result is None and (kind, rel) in self.carried:
            result = self.carried[(kind, rel)]
            result = dict(result) if isinstance(result, dict) else result  # a planner may edit its copy
        if result is None:
            conn = self.connection(rel)
            request = next((pending for pending in self.sent
                            if pending.kind is kind and pending.path == rel), None)
            if request is None:
                self.unsent.clear()  # a new folder: files expected and never opened were skipped
                request = Pending(kind, rel, 0, wire.pack_path_request(kind, self.remote(rel)))
                self.send([request])
                self.sent.append(request)
            self.turn(request, rel)
            try:
                result = read_reply(conn, kind)
            except (OSError, ProtocolError, EOFError) as error:
                raise self.broken(error, rel) from None
            self.replied(request)
        if isinstance(result, OSError):
            raise SourceError(result.errno, result.strerror, rel)
        return result

