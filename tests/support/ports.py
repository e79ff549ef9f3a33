"""Free loopback TCP ports for servers that the tests start as separate processes."""

from __future__ import annotations

import socket


def free_port(*taken: int) -> int:
    """A loopback port that nothing listens on right now and that is not in ``taken``.

    The port is released before it is returned, so another process could take it first; the
    tests that start several servers pass the ports they already chose as ``taken``.
    """
    while True:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if port not in taken:
            return port


def accepts(port: int, host: str = "127.0.0.1") -> bool:
    """Does something accept TCP connections on ``host:port`` right now?"""
    try:
        socket.create_connection((host, port), timeout=2).close()
    except OSError:
        return False
    return True
