"""The bench's delaying proxy, through a real echo server: delays are lower bounds, bytes intact.

Timing assertions are lower bounds only (a loaded machine makes everything slower, never faster).
"""
from __future__ import annotations

import os
import socket
import threading
import time

import pytest

from bench.proxy import MIB, WINDOW, Proxy, model


@pytest.fixture(autouse=True)
def no_thread_outlives_its_test():
    """Later tests fork the test process: a thread left running makes every fork risky (and
    Python 3.12 warns at each one)."""
    before = set(threading.enumerate())
    yield
    for thread in set(threading.enumerate()) - before:
        thread.join(10)
    assert set(threading.enumerate()) <= before


@pytest.fixture
def echo_server():
    """An echo server on a free port: echoes each connection until EOF, then closes it."""
    listener = socket.create_server(("127.0.0.1", 0))

    def echo(conn: socket.socket) -> None:
        with conn:
            while data := conn.recv(1 << 20):
                conn.sendall(data)

    def serve() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            threading.Thread(target=echo, args=(conn,), daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    yield listener.getsockname()
    listener.shutdown(socket.SHUT_RDWR)  # wakes accept(): close alone does not
    listener.close()


@pytest.fixture
def through():
    """through(upstream, model, rtt_ms) -> a started in-process Proxy; all closed at the end."""
    proxies = []

    def start(upstream, name: str, rtt_ms: float) -> Proxy:
        proxy = Proxy(0, upstream, model(name, rtt_ms)).start()
        proxies.append(proxy)
        return proxy

    yield start
    for proxy in proxies:
        proxy.close()


def recv_exactly(conn: socket.socket, size: int) -> bytes:
    chunks, got = [], 0
    while got < size:
        chunk = conn.recv(min(1 << 20, size - got))
        assert chunk, f"EOF after {got} of {size} bytes"
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


@pytest.mark.parametrize("name", ["capped", "window"])
def test_a_round_trip_costs_at_least_the_rtt_and_the_first_one_a_handshake_more(
        echo_server, through, name):
    rtt = 0.030
    proxy = through(echo_server, name, rtt * 1000)
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", proxy.port)) as conn:
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn.sendall(b"ping")
        assert recv_exactly(conn, 4) == b"ping"
        assert time.monotonic() - started >= 2 * rtt          # handshake + request/response
        for _ in range(3):
            sent = time.monotonic()
            conn.sendall(b"x")
            assert recv_exactly(conn, 1) == b"x"
            assert time.monotonic() - sent >= rtt


@pytest.mark.parametrize("name", ["capped", "window"])
def test_bytes_arrive_intact_and_in_order_both_ways(echo_server, through, name):
    proxy = through(echo_server, name, 10)
    payload = os.urandom(6 * MIB + 12345)
    with socket.create_connection(("127.0.0.1", proxy.port)) as conn:
        def send() -> None:
            view = memoryview(payload)
            for start in range(0, len(payload), 100_000):     # uneven pieces
                conn.sendall(view[start:start + 100_000])
            conn.shutdown(socket.SHUT_WR)
        sender = threading.Thread(target=send)
        sender.start()
        echoed = recv_exactly(conn, len(payload))
        assert conn.recv(1) == b""                            # the half-close travelled too
        sender.join()
    assert echoed == payload


def test_one_stream_moves_at_most_a_window_per_rtt(echo_server, through):
    rtt = 0.020
    proxy = through(echo_server, "window", rtt * 1000)
    size = 3 * WINDOW
    with socket.create_connection(("127.0.0.1", proxy.port)) as conn:
        conn.sendall(b"p")
        recv_exactly(conn, 1)                                 # past the handshake
        started = time.monotonic()
        sender = threading.Thread(target=conn.sendall, args=(bytes(size),))
        sender.start()
        recv_exactly(conn, size)
        elapsed = time.monotonic() - started
        sender.join()
    # 3 windows need 2 full RTTs of waiting for acks, plus the last one's way there and back
    assert elapsed >= 3 * rtt


def test_the_capped_link_is_shared_by_all_streams(echo_server, through):
    proxy = through(echo_server, "capped", 1)
    size = 4 * MIB
    started = time.monotonic()

    def stream() -> None:
        with socket.create_connection(("127.0.0.1", proxy.port)) as conn:
            sender = threading.Thread(target=conn.sendall, args=(bytes(size),))
            sender.start()
            recv_exactly(conn, size)
            sender.join()

    streams = [threading.Thread(target=stream) for _ in range(4)]
    for thread in streams:
        thread.start()
    for thread in streams:
        thread.join()
    assert time.monotonic() - started >= 4 * size / 125e6     # 16 MiB over one 1 Gbit/s link
