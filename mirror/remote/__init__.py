"""mirror over TCP: `serve` a folder read-only, and `remote_tree` to read one as a copy's SRC."""
from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable

from ..errors import MirrorError

__all__ = ["remote_tree", "serve", "is_remote", "SCHEME", "DEFAULT_PORT"]
SCHEME = "mirror://"
DEFAULT_PORT = 8730


def is_remote(text: str | bytes) -> bool:
    """A mirror:// URL rather than a local path."""
    return os.fsencode(text).startswith(SCHEME.encode())


def remote_tree(url: str, token_file: str | None = None, tls_ca: str | None = None):
    """The SourceTree at mirror://HOST:PORT/PATH (PATH below the served folder), for
    copy_tree, sync_tree and check_tree. Nothing connects until the run reads it."""
    from .connection import Address, parse_url
    from .credentials import client_tls, read_token
    from .tree import RemoteTree
    host, port, path = parse_url(url)
    token = read_token(token_file) if token_file else None
    client_tls(tls_ca)  # a bad CA file is a usage error now, not a failure in every worker
    return RemoteTree(Address(host, port, path, token, tls_ca, os.urandom(16)))


def log_line(line: str) -> None:
    print(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} mirror serve: {line}", file=sys.stderr, flush=True)


def serve(root: str, bind: str = "127.0.0.1", port: int = DEFAULT_PORT, token_file: str | None = None,
          tls_cert: str | None = None, tls_key: str | None = None, max_clients: int = 16,
          log: Callable[[str], None] = log_line, on_ready: Callable[[tuple], None] | None = None) -> None:
    """Serve `root` read-only until stopped (a stop signal, or KeyboardInterrupt); one log line
    per client run. MirrorError for a setup that cannot or must not start."""
    from .credentials import read_token, server_tls
    from .server import Server
    token = read_token(token_file) if token_file else None
    server = Server(root, bind, port, token, server_tls(tls_cert, tls_key), max_clients, log)
    host, bound = server.listen()
    log(f"serving {os.fsdecode(server.root)} read-only on {host}:{bound} "
        f"(token: {'yes' if token else 'no'}, TLS: {'yes' if server.tls else 'no'}, "
        f"at most {max_clients} clients)")
    if on_ready is not None:
        on_ready((host, bound))
    server.serve_forever()


def refuse_remote_dst(dst: str) -> None:
    if is_remote(dst):
        raise MirrorError("DST cannot be a mirror:// URL: a server only serves (run mirror on "
                          "that machine to copy to it)")
