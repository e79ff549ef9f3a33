"""How a channel's waits end badly: ``ChannelClosed``, failures nobody awaits, handshake timeouts.

Shared by ``socket_channel`` (and its ``socket_writer``), ``session`` and ``upstream``; kept out
of ``socket_channel.py`` (house rule: small modules) and apart from any one channel class, so
that catching ``ChannelClosed`` does not import the channel.
"""

from __future__ import annotations

import asyncio
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
