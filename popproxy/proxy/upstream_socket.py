"""How the proxy reaches an upstream: a non-blocking socket connected through the loop, read by a
``socket_channel.SocketChannel`` (issue 18 item 6).

Why not ``loop.create_connection``: it leaves a transport and a protocol object on every
upstream connection (measured alone: about 2.1 KiB per connection on asyncio's loop, 0.3 KiB
on uvloop, bench/README.md "Idle memory"); the channel reads its socket itself
(``loop.add_reader``) and does TLS on the descriptor (``switch_to_tls`` with
``server_side=False``: the upstream modes STLS and implicit TLS, ``upstream.py``).

Connecting does what ``create_connection`` did for us (without ``sock_connect``: see
``connect_one``): every address ``getaddrinfo`` returns is tried in order and the first
that accepts wins; if none does, their error is raised (one error if they all say the same,
else all of them, as asyncio words it).  The connect timeout is ``open_channel``'s (given by
``UpstreamConnection.open``); an attempt cancelled or timed out closes its socket.
"""

from __future__ import annotations

import _socket
import asyncio
import contextlib
import errno
import socket
from collections.abc import Sequence
from typing import Any, cast

from popproxy.proxy.socket_channel import SocketChannel

# What getaddrinfo returns for one address: family, type, proto, canonical name, address.
AddrInfo = tuple[int, int, int, str, tuple[Any, ...]]
# (host, port) -> its addresses if the host is an address literal, None if it is a name.  Both
# are fixed facts, so each upstream is parsed once, not at every login (socket.getaddrinfo's
# Python wrapper, an IDNA encoding and four enum conversions: ~20 Python calls; issue 18).
# Upstreams come from the policy, a handful; the bound only keeps reloads from growing it.
_literals: dict[tuple[str, int], tuple[AddrInfo, ...] | None] = {}
MAX_LITERALS = 1024


async def open_channel(host: str, port: int, timeout: float | None = None) -> SocketChannel:
    """Connect to ``host:port`` (TCP, ``TCP_NODELAY``) and return its ``SocketChannel``.

    ``timeout``: ``TimeoutError`` if resolving and connecting take longer (what
    ``asyncio.timeout`` around the call would do, for less: a timer on each connect's future,
    no task cancellation; ``UpstreamConnection.open`` passes the upstream's connect timeout).
    """
    loop = asyncio.get_running_loop()
    deadline = None if timeout is None else loop.time() + timeout
    infos: Sequence[AddrInfo] | None = _literals.get((host, port))  # a literal: no coroutine
    if infos is None:
        if deadline is None:
            infos = await resolve(loop, host, port)
        else:
            async with asyncio.timeout_at(deadline):
                infos = await resolve(loop, host, port)
    if not infos:
        raise OSError(f"getaddrinfo({host!r}) returned no addresses")
    errors: list[OSError] = []
    for family, kind, proto, _, address in infos:
        try:
            sock = await connect_one(loop, family, kind, proto, address, deadline)
        except Expired:
            raise TimeoutError from None  # the deadline covers every address: none is left
        except OSError as exc:
            errors.append(exc)
            continue
        # A RawSocket where the channel's type says socket.socket: the channel and TLS on it
        # (tls_socket.wrap) call only what both have (recv_into, send, setsockopt, close).
        return SocketChannel(cast(socket.socket, sock), loop=loop)
    raise connect_error(errors)


class RawSocket(_socket.socket):
    """An upstream's socket: ``_socket.socket``'s C methods, none of ``socket.socket``'s Python
    ones (its ``__init__``, ``close`` and ``_real_close``: three calls per connection).  What
    socket.socket adds (makefile, dup, enum properties, a context manager) no upstream uses;
    a weak reference it must allow (``ssl`` keeps one to a socket it wraps)."""

    __slots__ = ("__weakref__",)


class Expired(Exception):
    """``connect_one``'s deadline passed (not an OSError: a connect's own ETIMEDOUT is one,
    and the next address is tried after it)."""


async def resolve(loop: asyncio.AbstractEventLoop, host: str, port: int) -> Sequence[AddrInfo]:
    """The stream addresses of ``host:port``, in the resolver's order (tests replace it).

    An address literal is parsed here (``AI_NUMERICHOST``: no lookup, nothing blocks):
    ``loop.getaddrinfo`` runs in a thread pool (the default executor; libuv's on uvloop),
    whose threads cost memory and a hand-off per connection; ``create_connection`` skipped
    it likewise."""
    key = (host, port)
    try:
        infos = _literals[key]
    except KeyError:
        infos = _literal(host, port)
        if len(_literals) >= MAX_LITERALS:
            _literals.clear()
        _literals[key] = infos
    if infos is not None:
        return infos
    # A name: the system resolver, off the loop's thread (and asked every time: DNS changes).
    return await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)


def _literal(host: str, port: int) -> tuple[AddrInfo, ...] | None:
    try:
        return tuple(socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                        flags=socket.AI_NUMERICHOST))
    except socket.gaierror:
        return None


async def connect_one(loop: asyncio.AbstractEventLoop, family: int, kind: int, proto: int,
                      address: tuple[Any, ...], deadline: float | None = None) -> RawSocket:
    """One connected non-blocking socket (a ``RawSocket``); closed again if connecting fails,
    is cancelled or passes ``deadline`` (loop time: ``Expired``).

    The connect is started, awaited as writability (unless ``connected`` already), its result
    read from ``SO_ERROR`` (what ``loop.sock_connect`` does).  Not ``sock_connect``: uvloop's
    resolves the address again in libuv's thread pool, literal or not (4 threads more per
    process, and a hand-off per connection).  In this frame, not a helper's: a frame less to
    resume when it connects."""
    sock = RawSocket(family, kind, proto)
    try:
        sock.setblocking(False)
        err = sock.connect_ex(address)
        if err in (errno.EINPROGRESS, errno.EINTR):
            if not connected(sock):
                fd, done = sock.fileno(), loop.create_future()
                loop.add_writer(fd, wake, done)
                timer = None if deadline is None else loop.call_at(deadline, expire, done)
                try:
                    await done
                finally:
                    loop.remove_writer(fd)
                    if timer is not None:
                        timer.cancel()
            err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err:  # OSError(errno, ...) is the matching subclass (ConnectionRefusedError, ...)
            raise OSError(err, f"Connect call failed {address}")
        if family in (socket.AF_INET, socket.AF_INET6):
            # Commands and replies are small; Nagle would hold a pipelined login's second
            # line for an ACK (what create_connection's transports set too).
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except BaseException:  # OSError, Expired, and a cancellation (login deadline, shutdown)
        with contextlib.suppress(OSError):
            sock.close()
        raise
    return sock


def connected(sock: _socket.socket) -> bool:
    """Whether a connect reported in progress has completed already: to a loopback upstream it
    has, inside connect(2), and waiting for writability would cost a loop iteration and a
    resume of the whole login's coroutine chain for nothing.  (A failed one is not connected:
    waiting reports it, as before.)"""
    try:
        sock.getpeername()
    except OSError:
        return False
    return True


def wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


def expire(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_exception(Expired())


def connect_error(errors: list[OSError]) -> OSError:
    """One error for every failed address: the error itself if they all say the same."""
    if len({str(exc) for exc in errors}) == 1:
        return errors[0]
    return OSError("Multiple exceptions: " + ", ".join(str(exc) for exc in errors))
