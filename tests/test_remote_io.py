"""The remote's I/O paths: DATA payloads go socket -> pipe -> file by splice where Linux allows,
through the buffer where it does not, a cut or a failed write mid-splice fails only that file
with nothing left in DST, and the server answers pipelined requests in a few sends."""
from __future__ import annotations

import errno
import os
import pickle
import socket
import threading
import time

import pytest

from conftest import file_size_limit, snapshot, temp_files
from test_remote_security import FOLDER, TOKEN, Cut, HostileServer, Served, listing, local_tree, pull, regular
from mirror import copy_tree
from mirror.options import Options
from mirror.remote import remote_tree, stream, stripes as stripes_module, tree as tree_module, wire
from mirror.model import SourceError
from mirror.remote.connection import Address, Connection
from mirror.remote.wire import Frame, Read
from mirror.run.engine import InlineEngine

needs_splice = pytest.mark.skipif(stream.SPLICE is None, reason="no os.splice here")

BIG = (3 << 20) + 12345  # three whole DATA frames and a part: most of each goes by splice


class Splices:
    """os.splice counted (socket -> pipe and pipe -> file apart); `fail` makes the pipe -> file
    leg raise that OSError from the `after`-th call on."""

    def __init__(self, monkeypatch, fail: OSError | None = None, after: int = 0) -> None:
        self.real = stream.SPLICE
        self.into_pipe = self.into_file = 0
        self.fail, self.after = fail, after
        monkeypatch.setattr(stream, "SPLICE", self)

    def __call__(self, src, dst, count, offset_src=None, offset_dst=None, flags=0):
        if offset_dst is None:
            self.into_pipe += 1
        else:
            self.into_file += 1
            if self.fail is not None and self.into_file > self.after:
                raise self.fail
        return self.real(src, dst, count, offset_src=offset_src, offset_dst=offset_dst, flags=flags)


@pytest.fixture
def serve():
    """serve(root, **Server options) -> a Served in this process, stopped after the test."""
    started: list[Served] = []
    yield lambda root, **options: started.append(Served(root, [], **options)) or started[-1]
    for served in started:
        served.server.stop()


def tree(make_tree):
    return make_tree({"big": os.urandom(BIG), "d/small": os.urandom(5000), "d/mid": os.urandom(200_000),
                      "d/empty": b""})


def copy(url_or_tree, dst, **options):
    """copy_tree in this process (InlineEngine): the patched splice is the one used."""
    src = remote_tree(url_or_tree) if isinstance(url_or_tree, str) else url_or_tree
    return copy_tree(src, dst, Options(**options), engine=InlineEngine)


def url(served) -> str:
    return f"mirror://{served.host}:{served.port}/"


@needs_splice
def test_big_frames_go_by_splice_and_arrive_whole(make_tree, serve, tmp_path, monkeypatch):
    src = tree(make_tree)
    splices = Splices(monkeypatch)

    report = copy(url(serve(src)), tmp_path / "dst")

    assert report.exit_code == 0, report.errors
    assert snapshot(tmp_path / "dst") == snapshot(src)
    # 3 MiB through it (one drain of the pipe may take what two fills brought)
    assert splices.into_pipe >= 3 and splices.into_file >= 3


def test_without_splice_the_same_bytes_come_through_the_buffer(make_tree, serve, tmp_path, monkeypatch):
    src = tree(make_tree)
    monkeypatch.setattr(stream, "SPLICE", None)
    served = serve(src)

    assert pull(served.address()) == local_tree(src)
    report = copy(url(served), tmp_path / "dst")
    assert report.exit_code == 0, report.errors
    assert snapshot(tmp_path / "dst") == snapshot(src)


@needs_splice
def test_a_file_that_refuses_splice_gets_the_pipe_s_bytes_by_write(make_tree, serve, tmp_path, monkeypatch):
    """EINVAL from pipe -> file (a filesystem without splice_write): what the pipe already holds
    is read back and written, and the rest of the run goes through the buffer."""
    src = tree(make_tree)
    splices = Splices(monkeypatch, fail=OSError(errno.EINVAL, "Invalid argument"))

    report = copy(url(serve(src)), tmp_path / "dst")

    assert report.exit_code == 0, report.errors
    assert snapshot(tmp_path / "dst") == snapshot(src)
    assert splices.into_file == 1 and splices.into_pipe == 1  # tried once, then never again


@needs_splice
def test_a_server_cut_mid_splice_fails_the_file_and_leaves_nothing(tmp_path, monkeypatch):
    size = 4 << 20
    cut = Cut(wire.frame(Frame.FILE, wire.pack_stat(regular(size)))
              + wire.HEADER.pack(wire.DATA_FRAME, Frame.DATA) + b"x" * (700 << 10))  # then it hangs up
    server = HostileServer({b"": listing((b"f", regular(size)))}, {b"f": cut})
    splices = Splices(monkeypatch)
    try:
        report = copy(f"mirror://127.0.0.1:{server.port}/", tmp_path / "dst", retries=0)
    finally:
        server.close()

    assert report.files_failed == 1 and report.exit_code == 1
    assert report.errors[0].error.errno == errno.ECONNRESET, report.errors
    assert splices.into_pipe >= 1  # the cut came while splicing, not while the buffer filled
    assert os.listdir(tmp_path / "dst") == [] and temp_files(tmp_path / "dst") == []


@needs_splice
def test_a_dst_write_failing_mid_splice_is_dst_s_error_and_the_run_goes_on(make_tree, serve, tmp_path,
                                                                          monkeypatch):
    """EFBIG half way through the big file: that file fails with DST's error (not a lost
    connection), the pipe and the connection (both mid-frame) are dropped, the other files
    arrive, and a run without the limit completes."""
    src = tree(make_tree)
    splices = Splices(monkeypatch)
    served = serve(src)

    with file_size_limit(1 << 20):
        failed = copy(url(served), tmp_path / "dst", retries=0)

    assert failed.files_failed == 1 and failed.exit_code == 1
    assert failed.errors[0].error.errno == errno.EFBIG, failed.errors
    assert os.fsencode(tmp_path / "dst") in failed.errors[0].error.filename  # DST's, not SRC's
    assert splices.into_file >= 1
    assert temp_files(tmp_path / "dst") == [] and not (tmp_path / "dst" / "big").exists()
    assert (tmp_path / "dst" / "d" / "mid").read_bytes() == (src / "d" / "mid").read_bytes()
    report = copy(url(served), tmp_path / "dst")
    assert report.exit_code == 0, report.errors
    assert snapshot(tmp_path / "dst") == snapshot(src)


def test_replies_to_pipelined_requests_leave_in_a_few_sends(make_tree, serve, monkeypatch):
    """200 small files asked for at once: their replies are gathered while more requests wait,
    not sent two a file (each send is a segment for every hop to handle)."""
    src = make_tree({f"f{i}": os.urandom(1000 + i) for i in range(200)})
    sends = []
    real = stream.Link.send_parts
    monkeypatch.setattr(stream.Link, "send_parts",
                        lambda link, parts: sends.append(len(parts)) or real(link, parts))
    conn = Connection(serve(src).address())
    try:
        conn.send(b"".join(wire.pack_read(Read(b"f%d" % i, 0, wire.NO_LIMIT, None)) for i in range(200)))
        for i in range(200):
            kinds = [conn.read()[0] for _ in range(3)]
            assert kinds == [Frame.FILE, Frame.DATA, Frame.EOF], (i, kinds)
    finally:
        conn.close()
    assert 1 <= len(sends) <= 10, sends


def test_reads_are_asked_for_again_in_batches_not_one_a_file(make_tree, serve, monkeypatch):
    """With a window of 64 KiB and refills of 16 KiB, 300 files of 1-2 KiB are asked for in a
    few dozen sends, not one a file, and all arrive."""
    monkeypatch.setattr(tree_module, "WINDOW_BYTES", 64 << 10)
    monkeypatch.setattr(tree_module, "REFILL_BYTES", 16 << 10)
    src = make_tree({f"f{i:03}": os.urandom(1000 + 3 * i) for i in range(300)})
    sends = []
    real = Connection.send
    monkeypatch.setattr(Connection, "send", lambda conn, data: sends.append(len(data)) or real(conn, data))
    source = tree_module.RemoteTree(serve(src).address())
    out = os.memfd_create("refill")
    try:
        listed = [source.entry(b"", name, st) for name, st in sorted(source.list(b"").items())]
        sends.clear()
        source.prefetch(files=listed)
        for entry in listed:
            handle, _ = source.open(entry.path, entry)
            try:
                assert source.receive(handle, out, entry.size, lambda count: None) == entry.size
            finally:
                source.release(handle)
            assert os.pread(out, entry.size, 0) == (src / os.fsdecode(entry.path)).read_bytes()
    finally:
        source.close()
        os.close(out)
    assert len(sends) <= 40, len(sends)


def test_a_new_connection_sends_its_first_request_with_the_hello():
    """Without a token to prove, the first request goes with the hello: this server says
    nothing until it has both, and the client does not wait for its welcome to ask."""
    listener = socket.create_server(("127.0.0.1", 0))
    heard = []

    def server():
        sock, _ = listener.accept()
        with sock:
            sock.settimeout(5)
            sock.recv(wire.HEADER.size + wire.HELLO.size, socket.MSG_WAITALL)
            heard.append(sock.recv(len(wire.pack_path_request(Frame.ROOT, b"")), socket.MSG_WAITALL))
            welcome = wire.WELCOME.pack(wire.MAGIC, wire.VERSION, 0, os.urandom(32))
            sock.sendall(wire.frame(Frame.WELCOME, welcome) + wire.frame(Frame.READY)
                         + wire.frame(Frame.ENTRY, wire.pack_stat(FOLDER)))
            sock.recv(1)
    thread = threading.Thread(target=server, daemon=True)
    thread.start()
    address = Address("127.0.0.1", listener.getsockname()[1], b"", session=os.urandom(16))
    source = tree_module.RemoteTree(address)
    try:
        assert source.root().path == b""
    finally:
        source.close()
        thread.join(10)
        listener.close()
    assert heard == [wire.pack_path_request(Frame.ROOT, b"")]


@pytest.mark.parametrize("requests_first", [False, True])
def test_a_server_that_hangs_up_on_the_hello_is_a_failed_handshake(requests_first):
    """A TLS server (or anything else) that reads the hello and resets the connection, before
    the requests sent with it leave (their send fails) or after (the first read fails): the
    one-line handshake error, with its hint, and the server counts as down."""
    listener = socket.create_server(("127.0.0.1", 0))
    heard = wire.HEADER.size + wire.HELLO.size + 2 * len(wire.pack_path_request(Frame.ROOT, b""))

    def reset():
        sock, _ = listener.accept()
        sock.recv(heard if requests_first else wire.HEADER.size + wire.HELLO.size, socket.MSG_WAITALL)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\1\0\0\0\0\0\0\0")  # on, 0 s: RST
        sock.close()
    thread = threading.Thread(target=reset, daemon=True)
    thread.start()
    address = Address("127.0.0.1", listener.getsockname()[1], b"", session=os.urandom(16))
    source = tree_module.RemoteTree(address)
    real = Connection.__init__

    def hello_then_reset(conn, *args, **kwargs):
        real(conn, *args, **kwargs)
        thread.join(5)
        time.sleep(0.1)  # the reset is in
    try:
        with pytest.MonkeyPatch.context() as patch:
            if not requests_first:
                patch.setattr(Connection, "__init__", hello_then_reset)
            with pytest.raises(SourceError) as failed:
                source.root()
    finally:
        source.close()
        thread.join(5)
        listener.close()
    assert "at the handshake" in failed.value.strerror and "--tls-ca" in failed.value.strerror, failed.value
    assert source.down is not None


def test_a_refusal_read_with_the_first_reply_is_the_entry_s_error_and_marks_the_server_down(
        make_tree, serve):
    source = tree_module.RemoteTree(serve(make_tree({"a": b"1"}), token=TOKEN).address())
    try:
        with pytest.raises(SourceError) as refused:
            source.root()
        assert refused.value.errno == errno.EACCES and "--token-file" in refused.value.strerror
        assert source.down is not None  # the next reads fail at once, as after a refused connect
        with pytest.raises(SourceError):
            source.list(b"")
    finally:
        source.close()


def sent_frames(monkeypatch) -> list[Frame]:
    """The type of every frame the client sends from now on (Connection.send patched)."""
    kinds: list[Frame] = []
    real = Connection.send

    def send(conn, data):
        at = 0
        while at < len(data):
            length, code = wire.HEADER.unpack_from(data, at)
            kinds.append(Frame(code))
            at += wire.HEADER.size + length
        return real(conn, data)
    monkeypatch.setattr(Connection, "send", send)
    return kinds


def test_the_root_s_listing_comes_with_root_and_goes_to_the_workers_with_the_tree(make_tree, serve,
                                                                                  monkeypatch):
    src = make_tree({"a/b": b"1", "c": b"2", "d": b"3"})
    kinds = sent_frames(monkeypatch)
    master = tree_module.RemoteTree(serve(src).address())
    worker = None
    try:
        assert master.root().path == b""
        assert kinds == [Frame.HELLO, Frame.ROOT, Frame.LIST]  # in one send: one round trip
        worker = pickle.loads(pickle.dumps(master))  # as the MPI engine hands it over
        listing = worker.list(b"")
        listing.clear()  # the planner's copy: the next one is whole again
        assert sorted(worker.list(b"")) == sorted(master.list(b"")) == [b"a", b"c", b"d"]
        assert kinds == [Frame.HELLO, Frame.ROOT, Frame.LIST]  # no LIST again
        assert sorted(worker.list(b"a")) == [b"b"]  # the rest is asked for as ever
    finally:
        master.close()
        if worker is not None:
            worker.close()
    assert master.carried == {}


def test_a_long_root_listing_is_left_to_the_workers(make_tree, serve, monkeypatch):
    monkeypatch.setattr(tree_module, "CARRIED_MOST", 2)
    src = make_tree({"a": b"1", "b": b"2", "c": b"3"})
    master = tree_module.RemoteTree(serve(src).address())
    try:
        master.root()
        assert master.carried == {} and master.conn is None  # closed mid-reply
        assert sorted(master.list(b"")) == [b"a", b"b", b"c"]
    finally:
        master.close()


@pytest.fixture
def small_stripes(monkeypatch):
    """Files of 2 MiB or more come in stripes of 1 MiB (STRIPE_MIN is 32 MiB)."""
    for module in (stripes_module, tree_module):
        monkeypatch.setattr(module, "STRIPE_MIN", 2 << 20)


def listed_file(source, name: bytes):
    return source.entry(b"", name, source.list(b"")[name])


def test_a_big_file_alone_in_its_batch_has_its_other_stripes_asked_for_at_once(make_tree, serve,
                                                                             small_stripes):
    data = os.urandom(6 << 20)  # six stripes of 1 MiB: the worker's and five helpers'
    source = tree_module.RemoteTree(serve(make_tree({"big": data})).address())
    out = os.memfd_create("big")
    try:
        big = listed_file(source, b"big")
        source.prefetch(files=[big])
        early = source.helpers.early[2]
        assert len(early) == 5 and all(stripe.thread.is_alive() for stripe in early)  # asking
        handle, _ = source.open(b"big", big)
        try:
            assert source.receive(handle, out, big.size, lambda count: None) == big.size
            assert handle.same
        finally:
            source.release(handle)
        assert source.helpers.early is None and len(source.helpers.idle) == 5  # taken, then kept
        assert os.pread(out, big.size + 1, 0) == data
    finally:
        source.close()
        os.close(out)


def test_stripes_asked_ahead_for_a_file_never_received_are_dropped(make_tree, serve, small_stripes):
    served = serve(make_tree({"big": os.urandom(6 << 20), "small": b"s"}))
    source = tree_module.RemoteTree(served.address())
    try:
        source.prefetch(files=[listed_file(source, b"big")])
        early = source.helpers.early[2]
        source.prefetch(files=[listed_file(source, b"small")])  # the next task: big was skipped
        assert source.helpers.early is None
        assert not any(stripe.thread.is_alive() for stripe in early)
        assert all(stripe.conn is None for stripe in early)  # closed mid-reply, never reused
        assert source.list(b"").keys() == {b"big", b"small"}  # the pipeline is still in step
    finally:
        source.close()
