"""Frames over one socket: our own receive buffer, a wait only when a call would block, data by splice.

Both ends read frames out of one 256 KiB buffer (many small files' replies come in one recv),
and wait in poll() only when a call would block: a socket with a timeout costs a poll before
every call in CPython, two system calls (and two turns of the GIL) where one does. A DATA
payload goes to its file straight from the socket where Linux allows (splice through a pipe:
the bytes are never copied into Python), else through the buffer. A file is written at most
256 KiB at a time: on this kernel (6.18, in a VM) a buffered write of 1 MiB at a 1 MiB-aligned
offset, as a whole DATA frame was, took up to 10x the system time of four 256 KiB writes.
Plain sockets only: TLS keeps its own socket's timeouts and reads, and splice would see its
ciphertext.
"""
from __future__ import annotations

import errno
import fcntl
import os
import select
import socket
import time

from . import wire
from .wire import Frame, ProtocolError

BUFFER = 256 << 10          # bytes asked of one recv
PIECE = 256 << 10           # at most this much written to a file by one call
SPLICE_MIN = 64 << 10       # a shorter rest of a payload goes through the buffer: the same recv
                            # then takes the frames after it too
SPLICE = getattr(os, "splice", None)  # Linux, Python 3.10+
F_SETPIPE_SZ, F_GETPIPE_SZ = 1031, 1032  # fcntl has them from Python 3.10 on Linux only
# splice refused for this socket or file (a filesystem without splice_write, a kernel without
# splice): the bytes go through the buffer instead
UNSPLICEABLE = frozenset({errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP})
REQUESTS_BUFFER = 64 << 10  # the server's: requests read at once (each at most 8 KiB)
OUTBOX = 256 << 10          # replies gathered up to this many bytes before they are sent
OUTBOX_PARTS = 256          # or this many parts (sendmsg takes at most IOV_MAX, 1024)


class WriteFailed(Exception):
    """Writing to DST failed (not the connection): the error is DST's."""

    def __init__(self, error: OSError) -> None:
        super().__init__(error)
        self.error = error


class Link:
    """One socket's bytes: frames read out of our own buffer, whole sends, payloads written to
    files. `timeout` bounds every wait (socket.timeout past it); `deadline`, when set, bounds
    them all together (the server's handshake: a peer dripping bytes would reset a timeout)."""

    def __init__(self, sock: socket.socket, timeout: float | None, size: int = BUFFER) -> None:
        self.sock = sock
        self.plain = not hasattr(sock, "version")  # an SSLSocket has one
        self.fd = sock.fileno()
        self.deadline: float | None = None
        self.size = size
        self.buffer = bytearray(size)
        self.view = memoryview(self.buffer)
        self.start = self.end = 0
        self.pipe: tuple[int, int, int] | None = None  # read end, write end, capacity
        self.splicing = SPLICE is not None and self.plain
        self.timeout: float | None = None
        self.set_timeout(timeout)

    def set_timeout(self, timeout: float | None) -> None:
        self.timeout = timeout
        if self.plain:
            self.sock.setblocking(False)  # the waits are ours: poll() only when a call would block
        else:
            self.sock.settimeout(timeout)

    def close(self) -> None:
        self.drop_pipe()

    # -- waiting --------------------------------------------------------------------------

    def left(self) -> float | None:
        """Seconds the next wait may take: the timeout, cut short by the deadline."""
        if self.deadline is None:
            return self.timeout
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise socket.timeout("not done in time")
        return left if self.timeout is None else min(left, self.timeout)

    def wait(self, events: int) -> None:
        poller = select.poll()
        poller.register(self.fd, events)
        left = self.left()
        if not poller.poll(None if left is None else left * 1000):
            raise socket.timeout("timed out")

    # -- receiving ------------------------------------------------------------------------

    def recv_into(self, view: memoryview) -> int:
        if not self.plain:
            if self.deadline is not None:
                self.sock.settimeout(self.left())
            return self.sock.recv_into(view)
        while True:
            try:
                return self.sock.recv_into(view)
            except BlockingIOError:
                self.wait(select.POLLIN)

    def pending(self) -> int:
        """Bytes received and not taken yet."""
        return self.end - self.start

    def fill(self, count: int) -> bool:
        """At least `count` bytes (at most the buffer's size) buffered; False if the peer
        closed first."""
        if self.end - self.start >= count:
            return True
        if self.start + count > self.size:  # the rest moves to the front
            rest = self.end - self.start
            self.buffer[:rest] = self.view[self.start:self.end]
            self.start, self.end = 0, rest
        while self.end - self.start < count:
            received = self.recv_into(self.view[self.end:])
            if not received:
                return False
            self.end += received
        return True

    def has_frame(self) -> bool:
        """A whole frame is buffered: it can be read without waiting."""
        if self.end - self.start < wire.HEADER.size:
            return False
        length, _ = wire.HEADER.unpack_from(self.buffer, self.start)
        return self.end - self.start >= wire.HEADER.size + length

    def header(self, limit: int) -> tuple[Frame, int] | None:
        """The next frame's (type, payload length); None if the peer closed before a whole
        header (pending() says whether part of one came)."""
        if not self.fill(wire.HEADER.size):
            return None
        header = self.view[self.start:self.start + wire.HEADER.size]
        self.start += wire.HEADER.size
        return wire.parse_header(header, limit)

    def take(self, count: int) -> bytes:
        """The next `count` bytes; fewer if the peer closed first."""
        if count <= self.size:
            self.fill(count)
            taken = bytes(self.view[self.start:min(self.end, self.start + count)])
            self.start += len(taken)
            return taken
        data = bytearray(count)  # a big listing frame: read past the buffer
        view = memoryview(data)
        got = self.end - self.start
        view[:got] = self.view[self.start:self.end]
        self.start = self.end
        while got < count:
            received = self.recv_into(view[got:])
            if not received:
                break
            got += received
        return bytes(view[:got])

    def payload_to(self, fd: int, count: int, offset: int) -> None:
        """Write the next `count` bytes of the stream to file `fd` at `offset`: what is
        buffered from the buffer, the rest by splice where it can, else through the buffer.
        EOFError if the peer closes first; WriteFailed if the file cannot be written."""
        while count:
            if self.start == self.end:
                self.start = self.end = 0
                if self.splicing and count >= SPLICE_MIN:
                    moved = self.splice_to(fd, count, offset)
                    count -= moved
                    offset += moved
                    continue
                if not self.fill(1):
                    raise EOFError("connection closed inside a frame")
            step = min(count, self.end - self.start)
            write_at(fd, self.view[self.start:self.start + step], offset)
            self.start += step
            count -= step
            offset += step

    def splice_to(self, fd: int, count: int, offset: int) -> int:
        """Socket -> pipe -> file, up to a pipe's worth; what was moved (0: splice is refused
        here, and the caller goes through the buffer from now on)."""
        pipe_r, pipe_w, capacity = self.pipe or self.open_pipe()
        while True:
            try:
                moved = SPLICE(self.fd, pipe_w, min(count, capacity),
                               flags=os.SPLICE_F_MOVE | os.SPLICE_F_NONBLOCK)
                break
            except BlockingIOError:
                self.wait(select.POLLIN)
            except OSError as error:
                if error.errno not in UNSPLICEABLE:
                    raise
                self.splicing = False
                return 0
        if not moved:
            raise EOFError("connection closed inside a frame")
        done = 0
        try:
            while done < moved:
                done += SPLICE(pipe_r, fd, moved - done, offset_dst=offset + done)
        except OSError as error:
            if error.errno not in UNSPLICEABLE:
                self.drop_pipe()  # it holds bytes of the stream: of no use now
                raise WriteFailed(error) from None
            self.splicing = False  # this file takes no splice: what the pipe holds, by write
            write_at(fd, memoryview(read_exactly(pipe_r, moved - done)), offset + done)
        return moved

    def open_pipe(self) -> tuple[int, int, int]:
        pipe_r, pipe_w = os.pipe2(os.O_CLOEXEC)
        try:
            fcntl.fcntl(pipe_w, F_SETPIPE_SZ, PIECE)
        except OSError:  # over the user's pipe quota: the default size does too
            pass
        self.pipe = (pipe_r, pipe_w, fcntl.fcntl(pipe_w, F_GETPIPE_SZ))
        return self.pipe

    def drop_pipe(self) -> None:
        if self.pipe is not None:
            os.close(self.pipe[0])
            os.close(self.pipe[1])
            self.pipe = None

    # -- sending --------------------------------------------------------------------------

    def send(self, data: bytes) -> None:
        if not self.plain:
            self.sock.sendall(data)
            return
        view = memoryview(data)
        while view:
            try:
                view = view[self.sock.send(view):]
            except BlockingIOError:
                self.wait(select.POLLOUT)

    def send_parts(self, parts: list[bytes]) -> None:
        """Send `parts` in order, gathered by sendmsg (not joined first); empties the list."""
        if not self.plain:
            self.sock.sendall(b"".join(parts))
            parts.clear()
            return
        while parts:
            try:
                sent = self.sock.sendmsg(parts)
            except BlockingIOError:
                self.wait(select.POLLOUT)
                continue
            whole = 0
            while whole < len(parts) and sent >= len(parts[whole]):
                sent -= len(parts[whole])
                whole += 1
            del parts[:whole]
            if sent:
                parts[0] = memoryview(parts[0])[sent:]

    def sendfile(self, fd: int, offset: int, count: int) -> int:
        """Send `count` bytes of file `fd` from `offset`; fewer if the file ends first."""
        sent = 0
        while not self.plain and sent < count:  # TLS encrypts in Python: read, then send
            data = os.pread(fd, min(PIECE, count - sent), offset + sent)
            if not data:
                return sent
            self.sock.sendall(data)
            sent += len(data)
        while sent < count:
            try:
                done = os.sendfile(self.fd, fd, offset + sent, count - sent)
            except BlockingIOError:
                self.wait(select.POLLOUT)
                continue
            if not done:
                break
            sent += done
        return sent


class Channel:
    """The server's side of a Link: requests read, replies gathered while more requests wait
    and sent together when none does (one send for many small files, not two each)."""

    def __init__(self, sock: socket.socket, timeout: float) -> None:
        self.link = Link(sock, timeout, REQUESTS_BUFFER)
        self.plain = self.link.plain  # an SSLSocket cannot sendfile
        self.outbox: list[bytes] = []
        self.queued = 0

    def read(self, limit: int) -> tuple[Frame, bytes]:
        """The next frame; EOFError if the peer closed between frames, ProtocolError if it
        closed inside one (a truncated frame)."""
        header = self.link.header(limit)
        if header is None:
            if self.link.pending():
                raise ProtocolError("truncated frame header")
            raise EOFError("connection closed")
        kind, length = header
        payload = self.link.take(length)
        if len(payload) < length:
            raise ProtocolError(f"truncated {kind.name} frame ({len(payload)} of {length} bytes)")
        return kind, payload

    def queue(self, *parts: bytes) -> None:
        """Send `parts` with the next flush, or now if enough is gathered."""
        self.outbox += parts
        self.queued += sum(map(len, parts))
        if self.queued >= OUTBOX or len(self.outbox) >= OUTBOX_PARTS:
            self.flush()

    def flush(self) -> None:
        if self.outbox:
            self.queued = 0
            self.link.send_parts(self.outbox)

    def send(self, data: bytes) -> None:
        """Send `data` now, after whatever is gathered."""
        self.flush()
        self.link.send(data)

def write_at(fd: int, view: memoryview, offset: int) -> None:
    """All of `view` into `fd` at `offset`, PIECE at a time; WriteFailed if the file refuses."""
    try:
        while view:
            done = os.pwrite(fd, view[:PIECE], offset)
            view, offset = view[done:], offset + done
    except OSError as error:
        raise WriteFailed(error) from None


def read_exactly(fd: int, count: int) -> bytes:
    data = b""
    while len(data) < count:
        chunk = os.read(fd, count - len(data))
        if not chunk:
            raise EOFError("pipe closed")
        data += chunk
    return data
