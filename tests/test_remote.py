"""mirror serve and a mirror:// SRC, as users meet them: real servers and clients in subprocesses,
whole trees compared entry by entry, faults, tokens, TLS, limits and network namespaces."""
from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from conftest import ODD_NAMES, Dir, Fifo, File, Link, build, link_groups, snapshot, temp_files

pytestmark = pytest.mark.timeout(120)

TRACEBACK = "Traceback"


# -- helpers ------------------------------------------------------------------------------------

def mirror(*args, timeout: float = 60, **kwargs) -> subprocess.CompletedProcess:
    """`python -m mirror ARGS` to its end (at most `timeout` seconds: a hang fails the test)."""
    command = [sys.executable, "-m", "mirror", *map(os.fsdecode, args)]
    return subprocess.run(command, capture_output=True, text=True, errors="backslashreplace",
                          timeout=timeout, **kwargs)


def start(*args, prefix=()) -> subprocess.Popen:
    """`python -m mirror ARGS` in the background, in its own process group."""
    return subprocess.Popen([*prefix, sys.executable, "-m", "mirror", *map(os.fsdecode, args)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            errors="backslashreplace", start_new_session=True)


def one_line(stderr: str) -> str:
    """The one line a refused run prints (and never a traceback)."""
    assert TRACEBACK not in stderr, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    return lines[0]


def secret(path: Path, token: bytes, mode: int = 0o600) -> Path:
    path.write_bytes(token)
    os.chmod(path, mode)
    return path


def files_in(root) -> dict[bytes, bytes]:
    """The regular files below root (temporary ones too) and their contents."""
    found = {}
    for folder, _dirs, names in os.walk(os.fsencode(root)):
        for name in names:
            path = os.path.join(folder, name)
            if stat.S_ISREG(os.lstat(path).st_mode):
                with open(path, "rb") as stream:
                    found[os.path.relpath(path, os.fsencode(root))] = stream.read()
    return found


def has_a_file(root, besides: str = "kept") -> bool:
    """Any file below root (a temporary one too) but the one named `besides`."""
    for _folder, _dirs, names in os.walk(root):
        if set(names) - {besides}:
            return True
    return False


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Served:
    """A `mirror serve` process: its URL (mirror://HOST:PORT, no path), its log, its stop."""

    def __init__(self, process: subprocess.Popen, log_path: Path) -> None:
        self.process, self.log_path = process, log_path
        self.port, self.url = 0, ""
        self.killed = False   # the test killed it: it owes no clean exit
        self.stopped = False

    def log(self) -> str:
        return self.log_path.read_bytes().decode("utf-8", "backslashreplace")

    def freeze(self) -> None:
        """SIGSTOP: connections stay open, nothing is answered; kill() is the only way on."""
        self.killed = True
        os.kill(self.process.pid, signal.SIGSTOP)

    def kill(self) -> None:
        self.killed = True
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self) -> None:
        """SIGTERM; the server must exit 0 at once, having logged no traceback."""
        if self.stopped:
            return
        self.stopped = True
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
                pytest.fail(f"the server did not stop on SIGTERM:\n{self.log()}")
        if not self.killed:
            assert self.process.returncode == 0, self.log()
            assert TRACEBACK not in self.log(), self.log()
            assert "stopped by signal 15" in self.log()


@pytest.fixture
def served(tmp_path):
    """served(ROOT, *ARGS) -> a Served running `mirror serve ROOT --port 0 ARGS`, stopped with
    SIGTERM at the end (exit 0, no traceback). prefix=("ip", "netns", "exec", NS) runs it elsewhere."""
    started: list[Served] = []

    def serve(root, *args, prefix=()) -> Served:
        log_path = tmp_path / f"serve-{len(started)}.log"
        with open(log_path, "wb") as log:
            process = subprocess.Popen(
                [*prefix, sys.executable, "-m", "mirror", "serve", os.fsdecode(root), "--port", "0",
                 *map(os.fsdecode, args)], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                stderr=log, start_new_session=True)
        server = Served(process, log_path)
        started.append(server)
        deadline = time.monotonic() + 30
        while not (ready := re.search(r"serving .* read-only on (\S+):(\d+) \(", server.log())):
            assert process.poll() is None, f"the server did not start:\n{server.log()}"
            assert time.monotonic() < deadline, f"the server never said where it listens:\n{server.log()}"
            time.sleep(0.02)
        host = ready[1]
        host = "127.0.0.1" if host in ("0.0.0.0", "::") else f"[{host}]" if ":" in host else host
        server.port = int(ready[2])
        server.url = f"mirror://{host}:{server.port}"
        return server

    yield serve
    failures = []
    for server in started:
        try:
            server.stop()
        except BaseException as error:  # stop every server before saying which failed
            failures.append(error)
    if failures:
        raise failures[0]


# -- 1. end to end on loopback ------------------------------------------------------------------

OLD = 946684800_123456789   # 2000-01-01, with nanoseconds
BIG = (17 << 20) + 5        # past BIG_FILE (16 MiB): a task of its own, 18 DATA frames


def every_kind() -> dict:
    return {
        "sizes/empty": b"",
        "sizes/one": b"1",
        "sizes/64k": os.urandom(1 << 16),
        "sizes/64k+1": os.urandom((1 << 16) + 1),
        "sizes/1m": os.urandom(1 << 20),
        "sizes/3m+7": os.urandom((3 << 20) + 7),
        "sizes/big": os.urandom(BIG),
        "deep/a/b/c/d/leaf": b"leaf",
        "deep/a/b/sibling": File(b"sib", mtime_ns=OLD + 7),
        "links/outside": Link("/etc/hostname"),
        "links/up-and-out": Link("../../../../somewhere/else"),
        "links/inside": Link("../sizes/one"),
        "links/dangling": Link("no/such/thing"),
        "pipe": Fifo(),
        "modes/rw-r-----": File(b"640", mode=0o640),
        "modes/rwxr-xr-x": File(b"#!/bin/sh\n", mode=0o755),
        "modes/old": File(b"old", mtime_ns=OLD),
        "modes/private": Dir(mode=0o700),
        "modes/private/inner": File(b"in", mode=0o600),
        "modes/group": Dir(mode=0o750),
        "with spaces/a file name": b"spaces",
        **ODD_NAMES,
        **{f"many/f{i:04}": os.urandom(i % 700) for i in range(650)},  # pipelining matters
    }


def set_folder_mtimes(root: Path) -> None:
    """Folders with mtimes of their own (deepest first: setting one changes no parent)."""
    for number, rel in enumerate(["deep/a/b/c/d", "deep/a/b", "modes/private", "many", "deep"]):
        os.utime(root / rel, ns=(OLD + number, OLD + number))


def test_copy_sync_and_check_of_every_kind_of_entry_over_loopback(make_tree, served, tmp_path):
    spec = every_kind()
    src = make_tree(spec)
    set_folder_mtimes(src)
    server = served(src)
    local, dst = tmp_path / "local", tmp_path / "dst"
    assert mirror("copy", src, local).returncode == 0

    pulled = mirror("copy", server.url + "/", dst)

    assert pulled.returncode == 0, pulled.stderr
    files = sum(isinstance(value, (bytes, File)) for value in spec.values())
    assert f"Copied {files} files" in pulled.stderr and TRACEBACK not in pulled.stderr
    assert snapshot(dst) == snapshot(local) == snapshot(src)
    assert os.readlink(dst / "links/outside") == "/etc/hostname"    # a link, kept as one
    assert stat.S_ISFIFO(os.lstat(dst / "pipe").st_mode)
    assert temp_files(dst) == []

    # SRC changes: DST follows with sync, deletions included.
    (src / "deep/a/b/c/d/leaf").write_bytes(b"a longer leaf")
    (src / "sizes/one").unlink()
    build(src, {"sizes/one/now a folder": b"f", "new/folder/file": b"new", "many/f9999": b"9",
                "new/pipe": Fifo()})
    shutil.rmtree(src / "deep/a/b/c")
    (src / "sizes/3m+7").unlink()
    (src / "pipe").unlink()
    (src / "links/inside").unlink()
    os.symlink("../deep", src / "links/inside")
    os.chmod(src / "modes/rw-r-----", 0o604)

    synced = mirror("sync", server.url + "/", dst)

    assert synced.returncode == 0, synced.stderr
    assert snapshot(dst) == snapshot(src)
    assert not (dst / "deep/a/b/c").exists() and not (dst / "sizes/3m+7").exists()
    assert not os.path.lexists(dst / "pipe")
    assert os.readlink(dst / "links/inside") == "../deep"

    identical = mirror("check", server.url + "/", dst)
    assert identical.returncode == 0, identical.stdout + identical.stderr

    # Same size, same mtime, other bytes: only a comparison of contents sees it.
    changed = src / "many/f0100"
    before = os.stat(changed)
    changed.write_bytes(changed.read_bytes()[::-1])
    os.utime(changed, ns=(before.st_atime_ns, before.st_mtime_ns))

    by_content = mirror("check", "-c", server.url + "/", dst)
    by_metadata = mirror("check", server.url + "/", dst)

    assert by_content.returncode == 1, by_content.stdout + by_content.stderr
    differences = [line for line in by_content.stdout.splitlines() if line.startswith("* ")]
    assert len(differences) == 1 and differences[0].startswith("* many/f0100"), by_content.stdout
    assert by_metadata.returncode == 0, by_metadata.stdout


def test_hard_links_are_kept_through_the_remote_with_H(make_tree, served, tmp_path):
    src = make_tree({"a/one": b"shared", "single": b"alone", "c/other": b"two of us"})
    os.link(src / "a/one", src / "two")
    os.link(src / "a/one", src / "c/three")
    os.link(src / "c/other", src / "a/pair")
    server = served(src)

    pulled = mirror("copy", "-H", server.url + "/", tmp_path / "dst")

    assert pulled.returncode == 0, pulled.stderr
    assert link_groups(tmp_path / "dst") == link_groups(src) == {
        frozenset({b"a/one", b"two", b"c/three"}), frozenset({b"c/other", b"a/pair"})}
    assert snapshot(tmp_path / "dst") == snapshot(src)


def test_a_path_below_the_served_root(make_tree, served, tmp_path):
    src = make_tree({"sub/dir/x": b"x", "sub/dir/deeper/y": b"y", "sub/z": b"not pulled", "top": b"t",
                     b"caf\xe9 au lait/inner/w": b"w"})
    server = served(src)

    pulled = mirror("copy", server.url + "/sub/dir", tmp_path / "dst")
    odd = mirror("copy", server.url + os.fsdecode(b"/caf\xe9 au lait"), tmp_path / "odd")
    missing = mirror("copy", server.url + "/sub/nothing", tmp_path / "missing")

    assert pulled.returncode == 0, pulled.stderr
    assert snapshot(tmp_path / "dst") == snapshot(src / "sub/dir")
    assert odd.returncode == 0, odd.stderr
    assert snapshot(tmp_path / "odd") == snapshot(os.path.join(os.fsencode(src), b"caf\xe9 au lait"))
    assert missing.returncode == 2 and "/sub/nothing" in one_line(missing.stderr)
    assert not (tmp_path / "missing").exists()


# -- 2. dry run ---------------------------------------------------------------------------------

def test_a_dry_run_over_the_remote_lists_the_actions_and_changes_nothing(make_tree, served, tmp_path):
    src = make_tree({"new": b"n", "changed": b"newer", "same": File(b"s", mtime_ns=OLD)})
    dst = make_tree({"changed": b"old", "extra": b"x", "same": File(b"s", mtime_ns=OLD)})
    before = snapshot(dst)
    server = served(src)

    would_sync = mirror("sync", "--dry-run", "-v", server.url + "/", dst)
    would_copy = mirror("copy", "-n", "-v", server.url + "/", tmp_path / "fresh")

    assert would_sync.returncode == 0, would_sync.stderr
    assert "copy     new  (missing)" in would_sync.stdout
    assert "copy     changed  (size differs)" in would_sync.stdout
    assert "delete   extra  (not in source)" in would_sync.stdout
    assert " same " not in would_sync.stdout
    assert snapshot(dst) == before
    assert would_copy.returncode == 0, would_copy.stderr
    assert {"copy     new  (missing)", "copy     changed  (missing)",
            "copy     same  (missing)"} <= set(would_copy.stdout.splitlines())
    assert not (tmp_path / "fresh").exists()


# -- 3. faults ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def big_tree(tmp_path_factory) -> Path:
    """2,000 small files in 20 folders and three 20 MiB files: a pull of a few seconds."""
    src = tmp_path_factory.mktemp("big") / "src"
    build(src, {**{f"d{i % 20}/f{i}": os.urandom(1 + i * 7 % 4000) for i in range(2000)},
                **{f"huge/h{i}": os.urandom(20 << 20) for i in range(3)}})
    return src


@pytest.mark.parametrize("command", ["copy", "sync"])
def test_a_server_killed_mid_pull_fails_the_run_cleanly_and_a_new_server_finishes_it(
        big_tree, served, tmp_path, command):
    src, dst = big_tree, tmp_path / "dst"
    if command == "sync":
        build(dst, {"extra/kept": b"not in SRC: a sync that failed deletes nothing"})
    server = served(src)
    client = start(command, "-j", "2", server.url + "/", dst)
    deadline = time.monotonic() + 30
    while not (dst.is_dir() and has_a_file(dst)):
        assert client.poll() is None and time.monotonic() < deadline, client.communicate()
        time.sleep(0.002)
    server.freeze()               # the pull cannot finish
    time.sleep(0.5)
    assert client.poll() is None, "the pull finished without its server"

    server.kill()
    started = time.monotonic()
    stdout, stderr = client.communicate(timeout=60)

    assert client.returncode == 1, stdout + stderr
    assert TRACEBACK not in stderr
    assert time.monotonic() - started < 30
    assert temp_files(dst) == []
    copied = files_in(dst)
    if command == "sync":
        assert copied.pop(b"extra/kept").startswith(b"not in SRC")
    assert copied, "nothing was copied before the kill"
    for rel, data in copied.items():
        assert data == (src / os.fsdecode(rel)).read_bytes(), rel   # no partial file, ever
    assert len(copied) < 2003, "everything was copied before the kill"

    again = served(src)
    repaired = mirror(command, again.url + "/", dst)

    assert repaired.returncode == 0, repaired.stderr
    assert snapshot(dst) == snapshot(src) and temp_files(dst) == []


def test_a_client_killed_mid_pull_leaves_the_server_serving(big_tree, served, tmp_path):
    src = big_tree
    server = served(src)
    client = start("copy", "-j", "2", server.url + "/", tmp_path / "killed")
    deadline = time.monotonic() + 30
    while not ((tmp_path / "killed").is_dir() and has_a_file(tmp_path / "killed")):
        assert client.poll() is None and time.monotonic() < deadline, client.communicate()
        time.sleep(0.002)
    os.killpg(client.pid, signal.SIGKILL)   # the master and its workers, mid-stream
    client.communicate(timeout=10)

    second = mirror("copy", "-j", "2", server.url + "/", tmp_path / "dst")

    assert server.process.poll() is None, server.log()
    assert second.returncode == 0, second.stderr
    assert snapshot(tmp_path / "dst") == snapshot(src)
    deadline = time.monotonic() + 15   # a run is logged once its last connection has been gone 3 s
    while len(re.findall(r"session \w+: pulled /, ", server.log())) < 2:
        assert time.monotonic() < deadline, server.log()
        time.sleep(0.1)
    server.stop()   # exit 0, and no traceback in its log
    runs = re.findall(r"session \w+: pulled /, (\d+) files", server.log())
    assert len(runs) == 2 and 2003 in map(int, runs), server.log()   # the killed run's line, and ours


STOPPED_WHILE_LOGGING = """
import os, signal, sys, threading
from mirror.errors import Terminated, catch_stop_signals
catch_stop_signals()
from mirror.remote import log_line, serve
from mirror.remote.connection import Address, Connection

def one_run(address):  # a client run that connects and leaves at once
    def run():
        conn = Connection(Address(address[0], address[1], b"", session=os.urandom(16)))
        conn.close()
    threading.Thread(target=run).start()

def log(line):
    if " session " in line and not log.signalled:  # a stop signal comes as the line is written
        log.signalled = True
        os.kill(os.getpid(), signal.SIGTERM)
    log_line(line)
log.signalled = False

try:
    serve(sys.argv[1], port=0, log=log, on_ready=one_run)
except Terminated:
    log_line("stopped")
"""


def test_a_stop_signal_while_the_server_logs_a_run_loses_no_line(make_tree):
    src = make_tree({"a": b"1"})

    result = subprocess.run([sys.executable, "-c", STOPPED_WHILE_LOGGING, str(src)], capture_output=True,
                            text=True, timeout=30)

    assert result.returncode == 0 and result.stderr.endswith("stopped\n"), result.stderr
    assert "session " in result.stderr, result.stderr   # the run's line, written at the stop if not before


def test_no_server_exits_2_with_one_line_naming_the_url(make_tree, tmp_path):
    url = f"mirror://127.0.0.1:{free_port()}/some/path"

    result = mirror("copy", url, tmp_path / "dst")

    assert result.returncode == 2, result.stderr
    line = one_line(result.stderr)
    assert "mirror://127.0.0.1:" in line and "/some/path" in line and "refused" in line.lower()
    assert not (tmp_path / "dst").exists()


def test_a_client_that_leaves_during_the_handshake_costs_the_server_no_traceback(
        make_tree, served, tmp_path):
    from mirror.remote import wire
    src = make_tree({"a": b"1"})
    token = secret(tmp_path / "token", b"s3cret\n")
    server = served(src, "--token-file", token)
    with socket.create_connection(("127.0.0.1", server.port), timeout=10):
        pass                                        # a port scanner: connects, says nothing
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(wire.pack_hello(os.urandom(wire.SESSION), os.urandom(wire.NONCE)))
        assert sock.recv(wire.HEADER.size + wire.WELCOME.size)  # welcomed; then leaves, no AUTH

    assert mirror("copy", "--token-file", token, server.url + "/", tmp_path / "dst").returncode == 0
    server.stop()   # no traceback in its log


# -- 4. tokens ----------------------------------------------------------------------------------

def test_a_token_lets_in_only_who_holds_it(make_tree, served, tmp_path):
    src = make_tree({"a/b": b"data", "c": b"more"})
    token = secret(tmp_path / "token", b"correct horse battery staple\n")
    wrong = secret(tmp_path / "wrong", b"guess\n")
    server = served(src, "--token-file", token, "--bind", "0.0.0.0")  # a token: any address
    url = server.url + "/"

    right = mirror("copy", "--token-file", token, url, tmp_path / "dst")
    refused = mirror("copy", "--token-file", wrong, url, tmp_path / "refused")
    missing = mirror("copy", url, tmp_path / "missing")

    assert right.returncode == 0, right.stderr
    assert snapshot(tmp_path / "dst") == snapshot(src)
    assert refused.returncode == 2, refused.stderr
    assert "authentication failed" in one_line(refused.stderr)
    assert missing.returncode == 2, missing.stderr
    assert "token" in one_line(missing.stderr)
    assert not (tmp_path / "refused").exists() and not (tmp_path / "missing").exists()
    assert "authentication failed" in server.log()
    server.stop()   # exit 0, and no traceback in its log


def test_a_token_file_others_can_read_is_refused_by_server_and_client(make_tree, served, tmp_path):
    src = make_tree({"a": b"1"})
    loose = secret(tmp_path / "loose", b"s3cret\n", mode=0o644)
    token = secret(tmp_path / "token", b"s3cret\n")
    server = served(src, "--token-file", token)

    serving = mirror("serve", src, "--port", "0", "--token-file", loose, timeout=20)
    pulling = mirror("copy", "--token-file", loose, server.url + "/", tmp_path / "dst")

    assert serving.returncode == 2 and "chmod 600" in one_line(serving.stderr)
    assert pulling.returncode == 2 and "chmod 600" in one_line(pulling.stderr)
    assert not (tmp_path / "dst").exists()


@pytest.mark.parametrize("address", ["0.0.0.0", "::"])
def test_a_network_address_without_a_token_is_refused_at_start(make_tree, address):
    src = make_tree({"a": b"1"})

    result = mirror("serve", src, "--bind", address, "--port", "0", timeout=20)

    assert result.returncode == 2, result.stderr
    assert "--token-file" in one_line(result.stderr)


# -- 5. TLS -------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def certificates(tmp_path_factory) -> dict[str, Path]:
    """Two self-signed certificates for 127.0.0.1 and localhost: the server's, and another."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed: cannot make a certificate")
    folder = tmp_path_factory.mktemp("tls")
    made = {}
    for name in ("server", "other"):
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes",
                        "-keyout", folder / f"{name}.key", "-out", folder / f"{name}.pem",
                        "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
                        "-days", "1"], check=True, capture_output=True, timeout=60)
        made[name], made[f"{name}.key"] = folder / f"{name}.pem", folder / f"{name}.key"
    return made


def test_tls_copies_with_the_right_ca_and_fails_clearly_without(make_tree, served, certificates, tmp_path):
    src = make_tree({"a/b": b"secret data", "big": os.urandom(3 << 20)})
    server = served(src, "--tls-cert", certificates["server"], "--tls-key", certificates["server.key"])
    url = server.url + "/"

    trusted = mirror("copy", "--tls-ca", certificates["server"], url, tmp_path / "dst")
    plain = mirror("copy", url, tmp_path / "plain")
    stranger = mirror("copy", "--tls-ca", certificates["other"], url, tmp_path / "stranger")

    assert trusted.returncode == 0, trusted.stderr
    assert snapshot(tmp_path / "dst") == snapshot(src)
    assert plain.returncode == 2, plain.stderr
    assert "--tls-ca" in one_line(plain.stderr)
    assert stranger.returncode == 2, stranger.stderr
    assert "certificate" in one_line(stranger.stderr).lower()
    assert not (tmp_path / "plain").exists() and not (tmp_path / "stranger").exists()
    assert "TLS: yes" in server.log()


# -- 6. --max-clients ---------------------------------------------------------------------------

def test_a_full_server_says_busy(make_tree, served, tmp_path):
    from mirror.remote.connection import Address, Connection
    src = make_tree({"a": b"1"})
    server = served(src, "--max-clients", "1")
    holder = Connection(Address("127.0.0.1", server.port, b"", session=os.urandom(16)))
    try:
        refused = mirror("copy", server.url + "/", tmp_path / "dst")
    finally:
        holder.close()

    assert refused.returncode == 2, refused.stderr
    assert "busy" in one_line(refused.stderr)
    assert not (tmp_path / "dst").exists()
    assert "refused, 1 clients already" in server.log()
    time.sleep(0.2)  # the server sees the holder leave
    freed = mirror("copy", server.url + "/", tmp_path / "dst")
    assert freed.returncode == 0, freed.stderr
    assert snapshot(tmp_path / "dst") == snapshot(src)


def test_a_closed_connection_frees_its_place_on_the_server(make_tree, served, tmp_path):
    from mirror.remote.connection import Address, Connection
    src = make_tree({"a": b"1"})
    server = served(src, "--max-clients", "1")
    holder = Connection(Address("127.0.0.1", server.port, b"", session=os.urandom(16)))

    holder.close()
    time.sleep(0.2)
    after = mirror("copy", server.url + "/", tmp_path / "dst")

    assert after.returncode == 0, after.stderr   # not "server busy": the holder is gone
    assert snapshot(tmp_path / "dst") == snapshot(src)


# -- 7. several clients at once -----------------------------------------------------------------

def test_six_clients_at_once_each_get_the_whole_tree_and_a_log_line(make_tree, served, tmp_path):
    spec = {f"data/d{i % 10}/f{i}": os.urandom(i * 13 % 5000) for i in range(300)}
    spec["data/big"] = os.urandom(3 << 20)
    src = make_tree({**spec, "elsewhere": b"not pulled"})
    server = served(src)
    dsts = [tmp_path / f"dst{n}" for n in range(6)]

    clients = [start("copy", "-j", "2", server.url + "/data", dst) for dst in dsts]
    outputs = [client.communicate(timeout=90) for client in clients]

    assert [client.returncode for client in clients] == [0] * 6, outputs
    for dst in dsts:
        assert snapshot(dst) == snapshot(src / "data")
    server.stop()
    runs = re.findall(r"client 127\.0\.0\.1 session (\w+): pulled /data, (\d+) files, (\d+) bytes, 0 errors",
                      server.log())
    assert len(runs) == 6 and len({session for session, _, _ in runs}) == 6, server.log()
    assert {(int(files), int(nbytes)) for _, files, nbytes in runs} == {
        (len(spec), sum(map(len, spec.values())))}, server.log()


# -- 8. across network namespaces ---------------------------------------------------------------

def ip(*args) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=20)


@pytest.fixture
def namespaces():
    """Two network namespaces joined by a veth pair: 10.77.0.1/24 and 10.77.0.2/24."""
    if os.geteuid() != 0:
        pytest.skip("needs root to make network namespaces")
    if shutil.which("ip") is None:
        pytest.skip("the ip command (iproute2) is not installed")
    tag = uuid.uuid4().hex[:8]
    server_ns, client_ns = f"mirror-s-{tag}", f"mirror-c-{tag}"
    made = []
    try:
        for ns in (server_ns, client_ns):
            try:
                ip("netns", "add", ns)
            except (OSError, subprocess.CalledProcessError) as error:
                pytest.skip(f"ip netns add does not work here: {getattr(error, 'stderr', error)}")
            made.append(ns)
        ip("link", "add", f"ms{tag}", "type", "veth", "peer", "name", f"mc{tag}")
        for ns, link, address in ((server_ns, f"ms{tag}", "10.77.0.1/24"),
                                  (client_ns, f"mc{tag}", "10.77.0.2/24")):
            ip("link", "set", link, "netns", ns)
            ip("-n", ns, "addr", "add", address, "dev", link)
            ip("-n", ns, "link", "set", link, "up")
            ip("-n", ns, "link", "set", "lo", "up")
        yield server_ns, client_ns
    finally:
        for ns in made:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=20)


def test_a_pull_across_network_namespaces_with_a_token(make_tree, served, namespaces, tmp_path):
    server_ns, client_ns = namespaces
    src = make_tree({"a/b": b"across", "big": os.urandom(5 << 20),
                     **{f"many/f{i}": os.urandom(i) for i in range(200)}})
    token = secret(tmp_path / "token", b"netns-token\n")
    server = served(src, "--bind", "10.77.0.1", "--token-file", token,
                    prefix=("ip", "netns", "exec", server_ns))
    assert server.url.startswith("mirror://10.77.0.1:")

    pulled = subprocess.run(["ip", "netns", "exec", client_ns, sys.executable, "-m", "mirror", "copy",
                             "--token-file", str(token), server.url + "/", str(tmp_path / "dst")],
                            capture_output=True, text=True, timeout=60)

    assert pulled.returncode == 0, pulled.stderr
    assert snapshot(tmp_path / "dst") == snapshot(src)
    server.stop()
    assert "client 10.77.0.2 session" in server.log()   # it came from the other namespace


# -- 9. the library API -------------------------------------------------------------------------

def test_the_library_copies_from_a_remote_tree(make_tree, served, tmp_path):
    from mirror import copy_tree
    from mirror.remote import remote_tree
    src = make_tree({"a/b.txt": b"hi", "c": b"see", "link": Link("a/b.txt")})
    server = served(src)

    report = copy_tree(remote_tree(server.url + "/"), tmp_path / "dst")

    assert report.errors == [] and report.files_copied == 2 and report.links_created == 1
    assert snapshot(tmp_path / "dst") == snapshot(src)
