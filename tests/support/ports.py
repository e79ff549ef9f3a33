"""Free loopback TCP ports for servers that the tests start as separate processes."""

from __future__ import annotations

import selectors
import socket
import subprocess
import time


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


def queued_connections(port: int, count: int, within: float = 3.0) -> int:
    """Open ``count`` connections at once; how many complete the TCP handshake within ``within``
    seconds, i.e. fit in the listener's accept queue when nothing accepts them meanwhile.

    A connection that finds the accept queue full has its SYN dropped (TcpExtListenOverflows)
    and would only be retried after a second and more: that is what this counts.
    """
    sockets: list[socket.socket] = []
    done = 0
    with selectors.DefaultSelector() as selector:  # epoll: no FD_SETSIZE limit, unlike select
        try:
            for _ in range(count):
                sock = socket.socket()
                sockets.append(sock)
                sock.setblocking(False)
                sock.connect_ex(("127.0.0.1", port))
                selector.register(sock, selectors.EVENT_WRITE)
            deadline = time.monotonic() + within
            while done < count and (left := deadline - time.monotonic()) > 0:
                for key, _ in selector.select(left):
                    selector.unregister(key.fileobj)
                    sock = key.fileobj  # type: ignore[assignment]
                    done += sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0
        finally:
            for sock in sockets:
                sock.close()
    return done


def accept_queue_sizes(port: int) -> list[int]:
    """The listen(2) backlog of each socket listening on ``port`` (any address; one per worker of
    a SO_REUSEPORT group): ss(8)'s Send-Q column of a LISTEN socket (iproute2)."""
    out = subprocess.run(["ss", "-ltnH", f"sport = :{port}"], capture_output=True, text=True,
                         check=True).stdout
    return [int(line.split()[2]) for line in out.splitlines()]
