"""How a channel's waits end badly: ``ChannelClosed``, failures nobody awaits, handshake timeouts,
errors a loop would not report.

Shared by ``socket_channel`` (and its ``socket_writer``), ``session`` and ``upstream``; kept out
of ``socket_channel.py`` (house rule: small modules) and apart from any one channel class, so
that catching ``ChannelClosed`` does not import the channel.
"""

from __future__ import annotations

import asyncio
import socket
from typing import Any


class ChannelClosed(ConnectionError):
    """The peer went away (or TLS failed) while we were reading or writing."""


def consume_exception(future: asyncio.Future[Any]) -> None:
    """Done callback: mark a failure as retrieved even if nobody awaits the future."""
    if not future.cancelled():
        future.exception()


async def wait_handshake(handshake: asyncio.Future[None], timeout: float) -> None:
    """Await ``handshake``, failing it with ``TimeoutError`` after ``timeout`` seconds: one
    timer on the future itself, not ``asyncio.timeout()`` (a Timeout object, a task look-up
    and uncancel bookkeeping per login, issue 18)."""
    timer = asyncio.get_running_loop().call_later(timeout, _time_out, handshake)
    try:
        await handshake
    finally:
        timer.cancel()


def _time_out(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_exception(TimeoutError())


_STOPS_ON_ERROR: dict[type, bool] = {}


def stops_on_error(loop_type: type) -> bool:
    """Whether a loop of this class stops watching a descriptor that reports an error after one
    last callback: uvloop's does (libuv's ``uv_poll``), so a reset right behind the bytes just
    read must be seen then (``error_pending``), or the session would wait for its timeout.
    Asked once per loop class, not at every read (issue 18)."""
    known = _STOPS_ON_ERROR.get(loop_type)
    if known is None:
        known = _STOPS_ON_ERROR[loop_type] = loop_type.__module__.startswith("uvloop")
    return known


def error_pending(sock: socket.socket) -> bool:
    """A socket error (a reset) is waiting to be reported (``SO_ERROR``), or the socket is
    unusable."""
    try:
        return bool(sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR))
    except OSError:
        return True
