"""A delaying TCP proxy for the remote case: RTT/2 each way, then a 1 Gbit/s cap or a window.

This kernel has no netem, so the link is modelled in user space. Every byte read from one side
is stamped with the time it may arrive at the other (read time + RTT/2, later when the link is
busy) and sits in that direction's queue until then; a writer thread sleeps until it is due.

Models (per proxy; each direction of each stream is one `Pipe`):
  capped  all streams together share 125e6 bytes/s per direction (a 1 Gbit/s full-duplex link:
          a chunk leaves when the link is free, after n / rate seconds of transmission)
  window  no cap; each stream has at most 4 MiB in flight per direction, counted from the read
          until its "ack" would be back (delivery + RTT/2), as a TCP window of 4 MiB over the
          RTT: one stream moves at most 4 MiB per RTT; the proxy stops reading meanwhile
  none    delay only (used to measure the proxy's own ceiling)
A new connection also pays one RTT for its handshake: the client's first bytes leave no
earlier than one RTT after it connected, and the upstream connection is opened RTT/2 late.
The proxy's sockets get small kernel buffers (256 KiB) and TCP_NODELAY, so the kernel adds
little hidden window or latency.

    python -m bench.proxy --listen 0 --to 127.0.0.1:873 --rtt-ms 20 --model window
    python -m bench.proxy --ceiling          # throughput through the proxy, trivial endpoints
"""
from __future__ import annotations

import argparse
import collections
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass

MIB = 1024 * 1024
CAP_RATE = 125e6                # bytes/s: 1 Gbit/s
WINDOW = 4 * MIB                # bytes in flight per stream and direction
SOCKBUF = 256 * 1024            # SO_RCVBUF / SO_SNDBUF on the proxy's own sockets
CHUNK = 256 * 1024              # largest single read
QUEUE_CAP = 32 * MIB            # memory bound of one direction's queue when no window applies
AHEAD = 0.001                   # capped: a reader may book the link this far ahead of now


@dataclass(frozen=True)
class Model:
    """What the link does: one-way delay rtt/2, an optional shared rate, an optional window."""

    name: str
    rtt: float                   # seconds
    rate: float | None = None    # bytes/s, all streams together, per direction
    window: int | None = None    # bytes in flight per stream and direction


def model(name: str, rtt_ms: float) -> Model:
    rtt = rtt_ms / 1000
    if name == "capped":
        return Model(name, rtt, rate=CAP_RATE)
    if name == "window":
        return Model(name, rtt, window=WINDOW)
    if name == "none":
        return Model(name, rtt)
    raise ValueError(f"unknown model {name!r}: capped, window or none")


class Wire:
    """One direction of the shared link (capped model): the time it is next free."""

    def __init__(self, rate: float) -> None:
        self.rate, self.free_at, self.lock = rate, 0.0, threading.Lock()

    def book(self, size: int, now: float) -> float:
        """The time the last of `size` bytes leaves, sent after everything booked before."""
        with self.lock:
            self.free_at = max(self.free_at, now) + size / self.rate
            return self.free_at


class Stats:
    """Counters for the log line the proxy prints when it stops."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.connections = self.active = self.peak = 0
        self.bytes = [0, 0]                       # client->server, server->client

    def opened(self) -> None:
        with self.lock:
            self.connections += 1
            self.active += 1
            self.peak = max(self.peak, self.active)

    def add(self, side: int, size: int) -> None:
        with self.lock:
            self.bytes[side] += size

    def closed(self) -> None:
        with self.lock:
            self.active -= 1

    def text(self) -> str:
        up, down = (n / MIB for n in self.bytes)
        return (f"proxy: {self.connections} connections (peak {self.peak} at once), "
                f"{up:.1f} MiB up, {down:.1f} MiB down")


class Pipe:
    """One direction of one connection: a reader stamps and queues, a writer sends when due."""

    def __init__(self, src: socket.socket, dst: socket.socket, link: Model, wire: Wire | None,
                 not_before: float, stats: Stats, side: int, on_end) -> None:
        self.src, self.dst, self.link, self.wire = src, dst, link, wire
        self.delay = link.rtt / 2
        self.not_before = not_before              # handshake: nothing leaves before this
        self.stats, self.side, self.on_end = stats, side, on_end
        self.queue: collections.deque[tuple[float, bytes | None]] = collections.deque()
        self.queued = 0                           # bytes in the queue
        self.acks: collections.deque[tuple[float, int]] = collections.deque()
        self.in_flight = 0                        # window model: read, not yet acked
        self.cond = threading.Condition()
        self.broken = False

    def start(self) -> None:
        for target in (self._read, self._write):
            threading.Thread(target=target, daemon=True).start()

    def _room(self) -> int:
        """Bytes the reader may take now; waits (outside the socket) until there is room."""
        with self.cond:
            while not self.broken:
                now = time.monotonic()
                while self.acks and self.acks[0][0] <= now:
                    self.in_flight -= self.acks.popleft()[1]
                if self.link.window is not None:
                    room = self.link.window - self.in_flight
                    if room > 0:
                        return min(room, CHUNK)
                    timeout = self.acks[0][0] - now if self.acks else None
                elif self.queued < QUEUE_CAP:
                    return CHUNK
                else:
                    timeout = None
                self.cond.wait(timeout)
        return 0

    def _read(self) -> None:
        try:
            while True:
                room = self._room()
                if not room:
                    return
                data = self.src.recv(room)
                now = time.monotonic()
                sent = self.wire.book(len(data), now) if self.wire and data else now
                due = max(sent, self.not_before) + self.delay
                with self.cond:
                    self.queue.append((due, data or None))
                    self.queued += len(data)
                    self.in_flight += len(data)
                    self.cond.notify_all()
                if not data:
                    return                        # EOF travels as a queued None
                self.stats.add(self.side, len(data))
                if sent - now > AHEAD:            # the shared link is booked: wait our turn
                    time.sleep(sent - now - AHEAD)
        except OSError:
            self._break()

    def _write(self) -> None:
        try:
            while True:
                with self.cond:
                    while not self.queue and not self.broken:
                        self.cond.wait()
                    if self.broken:
                        return
                    due, data = self.queue[0]
                wait = due - time.monotonic()
                if wait > 0:
                    time.sleep(wait)
                with self.cond:
                    self.queue.popleft()
                    self.queued -= len(data or b"")
                    self.cond.notify_all()
                if data is None:
                    self.dst.shutdown(socket.SHUT_WR)
                    return
                self.dst.sendall(data)
                with self.cond:
                    self.acks.append((time.monotonic() + self.delay, len(data)))
                    self.cond.notify_all()
        except OSError:
            self._break()
        finally:
            self.on_end()

    def _break(self) -> None:
        """A socket failed: wake both threads and the other direction (by shutting both down)."""
        with self.cond:
            self.broken = True
            self.cond.notify_all()
        for sock in (self.src, self.dst):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def tune(sock: socket.socket) -> None:
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SOCKBUF)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SOCKBUF)


class Proxy:
    """Listens on host:port (0: any free port) and relays each connection to `upstream`."""

    def __init__(self, port: int, upstream: tuple[str, int], link: Model,
                 host: str = "127.0.0.1") -> None:
        self.upstream, self.link, self.stats = upstream, link, Stats()
        self.wires = [Wire(link.rate), Wire(link.rate)] if link.rate else [None, None]
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        tune(self.listener)                        # accepted sockets inherit the sizes
        self.listener.bind((host, port))
        self.listener.listen(128)
        self.port = self.listener.getsockname()[1]
        self.open: set[socket.socket] = set()
        self.lock = threading.Lock()

    def serve_forever(self) -> None:
        while True:
            try:
                client, _addr = self.listener.accept()
            except OSError:
                return                             # closed
            threading.Thread(target=self._relay, args=(client, time.monotonic()),
                             daemon=True).start()

    def start(self) -> "Proxy":
        threading.Thread(target=self.serve_forever, daemon=True).start()
        return self

    def close(self) -> None:
        try:
            self.listener.shutdown(socket.SHUT_RDWR)     # wakes accept()
        except OSError:
            pass
        self.listener.close()
        with self.lock:
            for sock in self.open:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def _relay(self, client: socket.socket, accepted: float) -> None:
        time.sleep(self.link.rtt / 2)              # the SYN reaches the server half an RTT late
        server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        tune(server)
        for sock in (client, server):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            server.connect(self.upstream)
        except OSError as error:
            print(f"proxy: cannot reach {self.upstream}: {error}", file=sys.stderr, flush=True)
            client.close()
            server.close()
            return
        self.stats.opened()
        with self.lock:
            self.open.update((client, server))
        ends = [2]

        def on_end() -> None:
            with self.lock:
                ends[0] -= 1
                if ends[0]:
                    return
                self.open.difference_update((client, server))
            client.close()
            server.close()
            self.stats.closed()

        # the client could send at once, but its connect() would return only after one RTT
        first = accepted + self.link.rtt
        Pipe(client, server, self.link, self.wires[0], first, self.stats, 0, on_end).start()
        Pipe(server, client, self.link, self.wires[1], 0.0, self.stats, 1, on_end).start()


def _sink(listener: socket.socket, counts: list[list[int]]) -> None:
    while True:
        try:
            conn, _ = listener.accept()
        except OSError:
            return
        count = [0]                                 # one counter per stream: no lost updates
        counts.append(count)

        def drain(conn: socket.socket = conn, count: list[int] = count) -> None:
            buf = bytearray(MIB)
            while n := conn.recv_into(buf):
                count[0] += n
            conn.close()
        threading.Thread(target=drain, daemon=True).start()


def ceiling(streams: int, seconds: float, link_name: str, rtt_ms: float) -> float:
    """MiB/s pushed through a proxy subprocess by `streams` senders into a sink, both trivial."""
    sink = socket.create_server(("127.0.0.1", 0))
    counts: list[list[int]] = []
    threading.Thread(target=_sink, args=(sink, counts), daemon=True).start()

    def received() -> int:
        return sum(count[0] for count in list(counts))
    proxy = subprocess.Popen([sys.executable, "-m", "bench.proxy", "--listen", "0", "--to",
                              f"127.0.0.1:{sink.getsockname()[1]}", "--rtt-ms", str(rtt_ms),
                              "--model", link_name], stdout=subprocess.PIPE, text=True)
    try:
        port = int(proxy.stdout.readline().split()[-1])
        stop = time.monotonic() + seconds + 2 * rtt_ms / 1000
        block = memoryview(bytes(MIB))

        def send() -> None:
            with socket.create_connection(("127.0.0.1", port)) as conn:
                while time.monotonic() < stop:
                    conn.sendall(block)
        senders = [threading.Thread(target=send, daemon=True) for _ in range(streams)]
        for thread in senders:
            thread.start()
        time.sleep(1 + 2 * rtt_ms / 1000)           # past the handshake and the ramp-up
        start_bytes, started = received(), time.monotonic()
        time.sleep(seconds - 1)
        rate = (received() - start_bytes) / (time.monotonic() - started) / MIB
        for thread in senders:
            thread.join()
        return rate
    finally:
        proxy.terminate()
        proxy.wait()
        sink.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.proxy", description=__doc__.split(
        "\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--listen", type=int, default=0, help="port on 127.0.0.1 (0: any free)")
    parser.add_argument("--to", help="upstream HOST:PORT")
    parser.add_argument("--rtt-ms", type=float, default=20.0)
    parser.add_argument("--model", choices=("capped", "window", "none"),
                        help="default capped (with --ceiling: none and window)")
    parser.add_argument("--ceiling", action="store_true",
                        help="measure the proxy's own throughput (model none unless given) with "
                             "1, 8 and 16 streams, then exit")
    args = parser.parse_args(argv)
    if args.ceiling:
        for link_name in (args.model,) if args.model else ("none", "window"):
            for streams in (1, 8, 16):
                rate = ceiling(streams, 4.0, link_name, args.rtt_ms)
                print(f"model {link_name}, rtt {args.rtt_ms:g} ms, {streams:2d} streams: "
                      f"{rate:7.0f} MiB/s", flush=True)
        return 0
    if not args.to:
        parser.error("--to HOST:PORT is required")
    host, _, port = args.to.rpartition(":")
    proxy = Proxy(args.listen, (host, int(port)), model(args.model or "capped", args.rtt_ms))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print(f"listening on 127.0.0.1 port {proxy.port}", flush=True)
    try:
        proxy.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        print(proxy.stats.text(), file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
