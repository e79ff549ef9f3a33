"""The listening sockets of a host's workers: per listener, a ``SO_REUSEPORT`` group with one
socket per worker, all on one port, bound by the supervisor (docs/scaling.md, "Workers on
one host").  The kernel hashes each new connection to one socket of the group.

A dead worker's socket leaves the group at once (:func:`leave`): while it stayed, the kernel
kept hashing new connections to it, and they waited, unanswered, for a replacement that a
crash-looping worker never provides.  Connections already queued on it are reset, or moved to
the live sockets where ``net.ipv4.tcp_migrate_req = 1`` (Linux 5.14).  The replacement
worker gets a new socket that joins the group (:func:`rejoin`).
"""

from __future__ import annotations

import socket

from popproxy.policy import Policy
from popproxy.proxy.acceptor import listen_failure


def bind_listeners(config: Policy, workers: int = 1) -> dict[str, list[socket.socket]]:
    """Per listener, one listening socket per worker, all on one port (``SO_REUSEPORT``: the
    kernel hashes each new connection to one of them), made as ``loop.create_server`` would
    (first address of the host; SO_REUSEADDR; IPv6 sockets IPv6 only).  The first is bound
    before it joins the group, so a port another process listens on (another popproxy's
    group too) fails here as without workers; the others bind the address it got."""
    sockets: dict[str, list[socket.socket]] = {}
    listener = config.listeners[0]
    try:
        for listener in config.listeners:
            family, kind, proto, _, address = socket.getaddrinfo(
                listener.host, listener.port, type=socket.SOCK_STREAM,
                flags=socket.AI_PASSIVE)[0]
            group = sockets[listener.name] = []
            for _ in range(workers):
                sock = socket.socket(family, kind, proto)
                group.append(sock)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if family == socket.AF_INET6:
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                if len(group) > 1:  # joins the first one's group (same user only: Linux)
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
                sock.bind(address)
                if len(group) == 1:
                    address = sock.getsockname()  # port 0: the port the kernel chose
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
                sock.listen(config.limits.listen_backlog)
    except OSError as exc:
        for group in sockets.values():
            for sock in group:
                sock.close()
        raise listen_failure(f"listeners {listener.name}", listener.host, listener.port,
                             exc) from exc
    return sockets


def leave(group: list[socket.socket], worker_id: int) -> None:
    """The dead worker's socket leaves ``group`` (closed; its place kept for rejoin), unless
    it is the last one open: with no other worker to take them, connections wait for a
    replacement there (and the port stays ours)."""
    if any(sock.fileno() != -1 for i, sock in enumerate(group) if i != worker_id):
        group[worker_id].close()


def rejoin(group: list[socket.socket], worker_id: int, backlog: int) -> None:
    """A new socket for ``worker_id`` in ``group`` if its old one left (a no-op otherwise):
    the address of a live member, SO_REUSEPORT before bind (joining, as in bind_listeners)."""
    if group[worker_id].fileno() != -1:
        return
    member = next(sock for sock in group if sock.fileno() != -1)
    sock = socket.socket(member.family, member.type, member.proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if member.family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(member.getsockname())
        sock.listen(backlog)
    except OSError:
        sock.close()
        raise
    group[worker_id] = sock
