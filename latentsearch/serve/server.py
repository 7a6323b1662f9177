"""Running the app: the exposure rule, the listening socket, uvicorn.

The socket is bound here, before uvicorn starts, so the address printed is the one really
listened on (``--port 0`` picks a free port) and a client that reads that line can connect
at once (the kernel queues it until uvicorn accepts).
"""

from __future__ import annotations

import socket
from typing import Any, Callable

from latentsearch.errors import InvalidInput

__all__ = ["LOOPBACK", "check_exposure", "bind", "url_of", "run"]

#: hosts that only this machine reaches: served without a token
LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})


def check_exposure(host: str, token: str | None) -> None:
    """Refuse to serve another host than loopback without a token."""
    if host not in LOOPBACK and not token:
        raise InvalidInput(
            f"--host {host} exposes the collections beyond this machine: give --token T "
            "(or set LATENTSEARCH_TOKEN), or serve on 127.0.0.1")


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host``:``port`` (IPv4 or IPv6, as the host resolves)."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
        sock = socket.socket(family, kind, proto)
    except OSError as exc:
        raise InvalidInput(f"cannot serve on {host}:{port}: {exc.strerror or exc}") from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        raise InvalidInput(f"cannot serve on {host}:{port}: {exc.strerror or exc}") from None
    return sock


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if sock.family == socket.AF_INET6 else f"http://{host}:{port}"


def run(app: Any, sock: socket.socket, *, log_level: str = "warning",
        announce: Callable[[str], None] | None = None) -> None:
    """Serve ``app`` on ``sock`` with uvicorn until interrupted (SIGINT / SIGTERM)."""
    import uvicorn

    config = uvicorn.Config(app, log_level=log_level, access_log=False, server_header=False)
    server = uvicorn.Server(config)
    if announce is not None:
        announce(url_of(sock))
    server.run(sockets=[sock])
