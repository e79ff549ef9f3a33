"""The server's own accept loop on a listening socket (what ``loop.create_server`` did).

Why not ``create_server``: its connections are transports, and a client connection is a
``socket_channel.SocketChannel`` that reads its socket itself (issue 18: no transport per idle
session).  This does what asyncio's ``_accept_connection`` does: accept until the queue is
empty (at most ``ACCEPTS_PER_WAKEUP`` at a time, so one burst does not starve the sessions
already running), each new socket non-blocking with ``TCP_NODELAY``, and when the process or
the kernel is out of descriptors or memory, stop accepting for ``ACCEPT_PAUSE`` seconds (the
connections wait in the accept queue, ``limits.listen_backlog``) instead of spinning on a
readable socket that cannot be accepted.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
from collections.abc import Callable

log = logging.getLogger("popproxy.server")

# Connections accepted per wake-up of a listening socket before the loop runs other callbacks
# (asyncio bounds it by the backlog it was given, 100 by default).
ACCEPTS_PER_WAKEUP = 100
# Seconds without accepting after EMFILE/ENFILE/ENOBUFS/ENOMEM (asyncio's ACCEPT_RETRY_DELAY).
ACCEPT_PAUSE = 1.0
_OUT_OF_RESOURCES = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)


def listen_failure(setting: str, host: str, port: int, exc: OSError) -> OSError:
    """``exc`` of a look-up, bind or listen, saying which setting and address failed: "Address
    already in use" alone does not tell an admin which of several listeners it was."""
    said = f"{setting}: {host}:{port}: {exc.strerror or exc}"
    return OSError(exc.errno, said) if exc.errno is not None else OSError(said)


def listening_sockets(host: str, port: int, backlog: int, setting: str = "listener"
                      ) -> list[socket.socket]:
    """Bound, listening sockets for ``host:port``, as ``loop.create_server`` made them: one
    per address of the host (duplicates once), SO_REUSEADDR, IPv6 sockets IPv6 only, an
    address family the host lacks (no IPv6) skipped; ``port`` 0 takes the port the first
    socket got for the others too.  A failure names ``setting`` (``listen_failure``)."""
    try:
        return _listening_sockets(host, port, backlog)
    except OSError as exc:
        raise listen_failure(setting, host, port, exc) from exc


def _listening_sockets(host: str, port: int, backlog: int) -> list[socket.socket]:
    made: list[socket.socket] = []
    infos = dict.fromkeys(socket.getaddrinfo(  # in order, each once (asyncio: a set)
        host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE))
    try:
        for family, kind, proto, _, address in infos:
            try:
                sock = socket.socket(family, kind, proto)
            except OSError:  # EAFNOSUPPORT: create_server skips such an address too
                continue
            if made and port == 0:
                address = (address[0], made[0].getsockname()[1], *address[2:])
            made.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(address)
            sock.listen(backlog)
    except OSError:
        for sock in made:
            sock.close()
        raise
    if not made:
        raise OSError(errno.EAFNOSUPPORT, f"no address of {host or '*'} can be listened on")
    return made


class Acceptor:
    """Accepts connections on one listening socket and hands each to ``on_accept``."""

    __slots__ = ("_kind", "_loop", "_on_accept", "_resume_timer", "_tcp", "sock")

    def __init__(self, sock: socket.socket, backlog: int,
                 on_accept: Callable[[socket.socket], object]) -> None:
        """``sock``: bound; listened on again here with ``backlog`` (a worker's inherited
        socket keeps the supervisor's queue size: the same ``limits.listen_backlog``)."""
        self._loop = asyncio.get_running_loop()
        self.sock = sock
        self._on_accept = on_accept
        self._resume_timer: asyncio.TimerHandle | None = None
        # What every accepted socket shares with this one, as plain ints, looked up once:
        # socket.accept() and ``conn.family`` make enums of them per connection (issue 18:
        # ~12 Python calls per login).
        self._kind = (int(sock.family), int(sock.type), sock.proto)
        self._tcp = sock.family in (socket.AF_INET, socket.AF_INET6)
        sock.listen(backlog)
        sock.setblocking(False)
        self._loop.add_reader(sock.fileno(), self._accept)

    def _accept(self) -> None:
        for _ in range(ACCEPTS_PER_WAKEUP):
            try:
                fd, _address = self.sock._accept()  # type: ignore[attr-defined]
            except (BlockingIOError, InterruptedError, ConnectionAbortedError):
                return  # queue empty; or a client gone before we took it
            except OSError as exc:
                if exc.errno not in _OUT_OF_RESOURCES:
                    log.error("accept on %s failed: %s", self.sock.getsockname(), exc)
                    return
                log.error("accept on %s: %s; not accepting for %.0f s",
                          self.sock.getsockname(), exc, ACCEPT_PAUSE)
                self._loop.remove_reader(self.sock.fileno())
                self._resume_timer = self._loop.call_later(ACCEPT_PAUSE, self._resume)
                return
            # (socket.accept() also did this; its blocking fix-up is moot: non-blocking below)
            conn = socket.socket(*self._kind, fileno=fd)
            try:
                conn.setblocking(False)
                if self._tcp:
                    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:  # reset already: nothing to serve
                conn.close()
                continue
            self._hand_over(conn)

    def _hand_over(self, conn: socket.socket) -> None:
        """A bug in ``on_accept`` costs that one connection (closed, logged with its
        traceback), not the rest of the wake-up's batch nor a descriptor left to the GC."""
        try:
            self._on_accept(conn)
        except Exception:
            fd = conn.fileno()
            if fd != -1:  # a channel may watch it: the loop lets go first (uvloop aborts)
                self._loop.remove_reader(fd)
                self._loop.remove_writer(fd)
            conn.close()
            log.exception("handing over a connection on %s failed; closed",
                          self.sock.getsockname())

    def _resume(self) -> None:
        self._resume_timer = None
        if self.sock.fileno() != -1:
            self._loop.add_reader(self.sock.fileno(), self._accept)

    def resize(self, backlog: int) -> None:
        """listen(2) again: Linux resizes the accept queue in place (connections already queued
        stay).  A failure keeps the old size and the rest of a reload (it is only logged)."""
        try:
            self.sock.listen(backlog)
        except OSError as exc:
            log.warning("limits.listen_backlog on %s: %s; the accept queue keeps its size",
                        self.sock, exc)

    def close(self) -> None:
        """Stop accepting and close the socket (the loop lets go of it first)."""
        if self._resume_timer is not None:
            self._resume_timer.cancel()
            self._resume_timer = None
        elif self.sock.fileno() != -1:
            self._loop.remove_reader(self.sock.fileno())
        self.sock.close()
