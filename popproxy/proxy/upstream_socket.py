"""How the proxy reaches an upstream: a non-blocking socket connected through the loop, read by a
``socket_channel.SocketChannel`` (issue 18 item 6).

Why not ``loop.create_connection``: it leaves a transport and a protocol object on every
upstream connection (measured alone: about 2.1 KiB per connection on asyncio's loop, 0.3 KiB
on uvloop, bench/README.md "Idle memory"); the channel reads its socket itself
(``loop.add_reader``) and does TLS on the descriptor (``switch_to_tls`` with
``server_side=False``: the upstream modes STLS and implicit TLS, ``upstream.py``).

Connecting does what ``create_connection`` did for us (without ``sock_connect``: see
``connect_socket``): every address ``getaddrinfo`` returns is tried in order and the first
that accepts wins; if none does, their error is raised (one error if they all say the same,
else all of them, as asyncio words it).  The connect timeout is the caller's
(``UpstreamConnection.open``): a cancelled attempt closes its socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import socket
from collections.abc import Sequence
from typing import Any

from popproxy.proxy.socket_channel import SocketChannel

# What getaddrinfo returns for one address: family, type, proto, canonical name, address.
AddrInfo = tuple[int, int, int, str, tuple[Any, ...]]
# (host, port) -> its addresses if the host is an address literal, None if it is a name.  Both
# are fixed facts, so each upstream is parsed once, not at every login (socket.getaddrinfo's
# Python wrapper, an IDNA encoding and four enum conversions: ~20 Python calls; issue 18).
# Upstreams come from the policy, a handful; the bound only keeps reloads from growing it.
_literals: dict[tuple[str, int], tuple[AddrInfo, ...] | None] = {}
MAX_LITERALS = 1024


async def open_channel(host: str, port: int) -> SocketChannel:
    """Connect to ``host:port`` (TCP, ``TCP_NODELAY``) and return its ``SocketChannel``."""
    loop = asyncio.get_running_loop()
    infos = await resolve(loop, host, port)
    if not infos:
        raise OSError(f"getaddrinfo({host!r}) returned no addresses")
    errors: list[OSError] = []
    for family, kind, proto, _, address in infos:
        try:
            sock = await connect_one(loop, family, kind, proto, address)
        except OSError as exc:
            errors.append(exc)
            continue
        return SocketChannel(sock)
    raise connect_error(errors)


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
                      address: tuple[Any, ...]) -> socket.socket:
    """One connected non-blocking socket; closed again if connecting fails or is cancelled."""
    sock = socket.socket(family, kind, proto)
    try:
        sock.setblocking(False)
        await connect_socket(loop, sock, address)
        if family in (socket.AF_INET, socket.AF_INET6):
            # Commands and replies are small; Nagle would hold a pipelined login's second
            # line for an ACK (what create_connection's transports set too).
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except BaseException:  # OSError, and the caller's timeout (CancelledError)
        with contextlib.suppress(OSError):
            sock.close()
        raise
    return sock


async def connect_socket(loop: asyncio.AbstractEventLoop, sock: socket.socket,
                         address: tuple[Any, ...]) -> None:
    """A non-blocking connect: started, awaited as writability, its result read from
    ``SO_ERROR`` (what ``loop.sock_connect`` does).  Not ``sock_connect``: uvloop's resolves
    the address again in libuv's thread pool, literal or not (4 threads more per process,
    and a hand-off per connection)."""
    err = sock.connect_ex(address)
    if err in (errno.EINPROGRESS, errno.EINTR):
        fd, connected = sock.fileno(), loop.create_future()
        loop.add_writer(fd, wake, connected)
        try:
            await connected
        finally:
            loop.remove_writer(fd)
        err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
    if err:  # OSError(errno, ...) is the matching subclass (ConnectionRefusedError, ...)
        raise OSError(err, f"Connect call failed {address}")


def wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


def connect_error(errors: list[OSError]) -> OSError:
    """One error for every failed address: the error itself if they all say the same."""
    if len({str(exc) for exc in errors}) == 1:
        return errors[0]
    return OSError("Multiple exceptions: " + ", ".join(str(exc) for exc in errors))
