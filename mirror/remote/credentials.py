"""The shared token and the TLS contexts of `mirror serve` and its clients."""
from __future__ import annotations

import os
import stat

from ..errors import MirrorError
from ..model import display


def read_token(path: str) -> bytes:
    """The token a file holds (its one line, without the newline). Like rsync's secrets
    file, one that others may read is refused: the token is the only key to the tree."""
    shown = display(os.fsencode(path))
    try:
        with open(path, "rb") as source:
            if stat.S_IMODE(os.fstat(source.fileno()).st_mode) & 0o077:
                raise MirrorError(f"token file {shown} can be read by others: chmod 600 it")
            token = source.read(4097).rstrip(b"\r\n")
    except OSError as error:
        raise MirrorError(f"cannot read token file {shown}: {error.strerror}") from None
    if not token or b"\n" in token or len(token) > 4096:
        raise MirrorError(f"token file {shown} must hold one non-empty line")
    return token


def server_tls(cert: str | None, key: str | None):
    """The server's TLS context, or None without --tls-cert."""
    if cert is None and key is None:
        return None
    if cert is None or key is None:
        raise MirrorError("--tls-cert and --tls-key go together")
    import ssl
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as error:
        raise MirrorError(f"cannot load the TLS certificate or key: {error}") from None
    return context


def client_tls(ca: str | None):
    """The client's TLS context (the server's certificate checked against `ca`, and its name
    against the URL's host), or None without --tls-ca."""
    if ca is None:
        return None
    import ssl
    try:
        context = ssl.create_default_context(cafile=ca)
    except (OSError, ssl.SSLError) as error:
        raise MirrorError(f"cannot load the TLS CA file {display(os.fsencode(ca))}: {error}") from None
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context
