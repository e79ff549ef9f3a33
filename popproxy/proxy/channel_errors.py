"""How a channel's waits end badly: ``ChannelClosed``, failures nobody awaits, handshake timeouts,
errors a loop would not report, and the words for a failed upstream connection.

Shared by ``socket_channel`` (and its ``socket_writer``), ``session`` and ``upstream``; kept out
of ``socket_channel.py`` (house rule: small modules) and apart from any one channel class, so
that catching ``ChannelClosed`` does not import the channel.
"""

from __future__ import annotations

import asyncio
import os
import socket
import ssl
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
    timer = handshake.get_loop().call_later(timeout, _time_out, handshake)
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
    read must be seen then (``reset_behind_read``), or the session would wait for its timeout.
    Asked once per loop class, not at every read (issue 18)."""
    known = _STOPS_ON_ERROR.get(loop_type)
    if known is None:
        known = _STOPS_ON_ERROR[loop_type] = loop_type.__module__.startswith("uvloop")
    return known


def reset_behind_read(loop: asyncio.AbstractEventLoop, sock: socket.socket) -> bool:
    """After a read event that left the socket watched: a socket error (a reset) waits behind
    the bytes read (``SO_ERROR``), or the socket is unusable, and the loop will not call
    again (``stops_on_error``).  One call for both looks: this runs at every read event
    (issue 18)."""
    stops = _STOPS_ON_ERROR.get(type(loop))
    if stops is None:
        stops = stops_on_error(type(loop))
    if not stops:
        return False
    try:
        return bool(sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR))
    except OSError:
        return True


def why_failed(exc: BaseException, timeout: float) -> str:
    """Why an upstream connection failed, in what an admin can act on: OpenSSL's reason or the
    system's words, not a class name (``timeout``: our deadline, in seconds)."""
    # Our own deadline (asyncio.timeout) raises a bare TimeoutError.  The kernel's ETIMEDOUT
    # (connect's SYN retries, a dead peer's retransmissions) is one too: Python maps that
    # errno to TimeoutError (PEP 3151), and it did not come from our setting, so it reads as
    # the system's words below ("Connection timed out"), not "within <our timeout>".
    if isinstance(exc, TimeoutError) and not exc.errno:
        return f"no answer within {timeout:g} s"
    if isinstance(exc, ssl.SSLError):  # its errno is OpenSSL's code, not the system's
        reason = getattr(exc, "reason", None)
        if not reason:
            return exc.strerror or str(exc) or exc.__class__.__name__
        if reason == "WRONG_VERSION_NUMBER":  # what a plain POP3 greeting reads as
            return "wrong version number (a plain POP3 port? see the upstream's mode)"
        return str(reason).lower().replace("_", " ")
    if isinstance(exc, OSError) and exc.errno is not None and exc.errno > 0:
        return os.strerror(exc.errno)  # (not "Connect call failed ('10.0.0.5', 110)")
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror  # a look-up's words (socket.gaierror: "Name or service not known")
    return str(exc) or exc.__class__.__name__  # ("Multiple exceptions: ...", ChannelClosed)
