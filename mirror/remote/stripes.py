"""Big remote files over several connections at once: one TCP stream cannot fill a long fat link.

A stream carries at most its window per round trip (4 MiB at 50 ms is 80 MB/s, whatever the
link); a big file is cut into stripes fetched over parallel connections, each written in place
with pwrite. The worker's own connection fetches the first stripe in turn with the pipeline;
the others go over extra connections the tree keeps for the next big file.
"""
from __future__ import annotations

import threading

from ..model import SourceError
from . import wire
from .connection import Address, Connection, lost
from .stream import WriteFailed
from .wire import Frame, ProtocolError

STRIPE_MIN = 32 << 20    # smaller files: one stream
STRIPES = 8              # streams for one file at most (a worker and seven helpers): two files
                         # of 256 MiB over a 4 MiB window at 50 ms took 2.0 s with 4, 8 in all
ALIGN = 1 << 20


def stripes(size: int) -> list[tuple[int, int]]:
    """(offset, length) of each stripe of a file of `size` bytes, the first one the worker's."""
    if size < STRIPE_MIN:
        return [(0, size)]
    count = min(STRIPES, size // (STRIPE_MIN // 2))
    step = -(-size // count // ALIGN) * ALIGN  # whole MiB: frames and pages line up
    return [(offset, min(step, size - offset)) for offset in range(0, size, step)]


def first_length(size: int) -> int:
    return stripes(size)[0][1] if size >= STRIPE_MIN else wire.NO_LIMIT


class Helpers:
    """The extra connections of one tree (one process), kept between big files."""

    def __init__(self, address: Address) -> None:
        self.address = address
        self.idle: list[Connection] = []
        self.early: tuple[bytes, tuple, list[Stripe]] | None = None  # asked ahead, not yet taken

    def start(self, path: bytes, remote: bytes, expect: tuple[int, int, int], parts,
              out: int | None) -> list[Stripe]:
        """A thread a stripe, each over an idle helper connection or a new one; with `out`
        None the stripes ask at once and wait for the file to write into (take())."""
        running = []
        for offset, length in parts:
            conn = self.idle.pop() if self.idle else None
            stripe = Stripe(self, path, wire.Read(remote, offset, length, expect), out, conn)
            stripe.thread.start()
            running.append(stripe)
        return running

    def prepare(self, files: list, remote) -> None:
        """A task's files were asked for: if they are one big file (a batch of its own, as the
        runner hands them out), ask for its other stripes now, not once its first one's reply
        comes: their connections' round trips go with that one's. `remote` maps a path to the
        server's."""
        self.drop()
        if len(files) == 1 and files[0].size >= STRIPE_MIN:
            big = files[0]
            expect = (big.size, big.mtime_ns, big.ctime_ns)
            self.early = (big.path, expect, self.start(big.path, remote(big.path), expect,
                                                       stripes(big.size)[1:], None))

    def take(self, path: bytes, expect: tuple[int, int, int], out: int) -> list[Stripe]:
        """The stripes asked ahead for this file, now writing into `out`; [] if none."""
        if self.early is None or self.early[:2] != (path, expect):
            self.drop()
            return []
        running, self.early = self.early[2], None
        for stripe in running:
            stripe.begin(out)
        return running

    def drop(self) -> None:
        """Stripes asked ahead for a file that was never received (it failed, or was skipped)."""
        if self.early is not None:
            abandon(self.early[2])
            self.early = None

    def close(self) -> None:
        self.drop()
        for conn in self.idle:
            conn.close()
        self.idle.clear()


class Stripe:
    """One stripe, fetched in a thread over a helper connection, written in place."""

    def __init__(self, helpers: Helpers, path: bytes, request: wire.Read, out: int | None,
                 conn: Connection | None) -> None:
        self.helpers, self.path, self.request, self.out = helpers, path, request, out
        self.received = self.reported = 0
        self.same = False
        self.error: OSError | None = None
        self.conn = conn
        self.stopped = False
        self.go = threading.Event()  # set once the file to write into is known
        if out is not None:
            self.go.set()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def begin(self, out: int) -> None:
        self.out = out
        self.go.set()

    def run(self) -> None:
        try:
            if self.conn is None:
                self.conn = Connection(self.helpers.address, wait=False)
            self.fetch()
        except SourceError as error:
            self.error = error
        except (OSError, ProtocolError, EOFError, WriteFailed) as error:
            if self.conn is not None:  # out of step: closed
                self.conn.close()
                self.conn = None
            if isinstance(error, WriteFailed):
                self.error = error.error  # DST's error, as a local copy reports it
            else:
                self.error = lost(error, self.path)

    def fetch(self) -> None:
        conn, request = self.conn, self.request
        conn.send(wire.pack_read(request))
        kind, payload = conn.read()
        if kind is Frame.ERROR:
            self.done()
            raise SourceError(*wire.parse_error(payload), self.path)
        if kind is not Frame.FILE:
            raise ProtocolError(f"{kind.name} instead of a file")
        self.go.wait()
        while True:
            kind, length = conn.read_header()
            if kind is Frame.DATA and not self.stopped:
                wire.check_data(length, self.received, request.length)
                conn.payload_to(self.out, length, request.offset + self.received)
                self.received += length
            elif kind is Frame.EOF:
                self.same, sent = wire.parse_eof(conn.read_exact(length))
                wire.check_end(self.same, sent, self.received, request.length)
                self.done()
                return
            elif kind is Frame.ERROR:
                code, message = wire.parse_error(conn.read_exact(length))
                self.done()
                raise SourceError(code, message, self.path)
            else:
                raise ProtocolError("stopped" if self.stopped else f"{kind.name} inside a file")

    def done(self) -> None:
        self.helpers.idle.append(self.conn)  # in step again: kept for the next file
        self.conn = None

    def new_bytes(self) -> int:
        count = self.received - self.reported
        self.reported += count
        return count

    def stop(self) -> None:
        """Cut short: the thread ends at its next frame, or now if it waits on the socket."""
        self.stopped = True
        self.go.set()
        conn = self.conn
        if conn is not None:
            try:
                conn.sock.shutdown(2)
            except OSError:
                pass


def finish(running: list[Stripe], on_bytes) -> tuple[int, bool]:
    """Wait for the helpers' stripes, passing their progress on; (bytes, all unchanged)."""
    try:
        for stripe in running:
            while stripe.thread.is_alive():
                stripe.thread.join(0.1)
                for other in running:
                    if count := other.new_bytes():
                        on_bytes(count)
        for stripe in running:
            if count := stripe.new_bytes():
                on_bytes(count)
    except BaseException:
        abandon(running)
        raise
    for stripe in running:
        if stripe.error is not None:
            raise stripe.error
    return sum(stripe.received for stripe in running), all(stripe.same for stripe in running)


def abandon(running: list[Stripe]) -> None:
    for stripe in running:
        stripe.stop()
    for stripe in running:
        stripe.thread.join(5)
