"""Relaying upstream answers to the client, and the client side as a narrow interface.

``relay`` and ``relay_body`` are what the session and the mailbox view share: neither needs
the other, only an ``UpstreamConnection`` and a ``ClientSink``.
"""

from __future__ import annotations

import asyncio
from typing import Protocol

from popproxy.capture.recorder import SessionRecorder
from popproxy.pop3 import replies
from popproxy.pop3.capa import filter_upstream, parse_capa_body, render_capa
from popproxy.pop3.errors import ProtocolError
from popproxy.pop3.events import Command, StatusLine
from popproxy.proxy.client_channel import ClientChannel
from popproxy.proxy.upstream import (
    MAX_CAPA_BODY,
    BodyChunks,
    UpstreamConnection,
    UpstreamError,
    UpstreamFailure,
)

TERMINATOR = b".\r\n"  # the line ending a multi-line answer (RFC 1939 section 3)


class ClientSink(Protocol):
    """Where replies to the client go."""

    def write(self, data: bytes) -> None:
        """Queue ``data`` for the client (never blocks)."""

    async def drain(self) -> None:
        """Wait while the client is slow to read (bounded by the idle timeout)."""


class ClientWriter:
    """The session's ``ClientSink``: writes to the client channel (and the capture, if on)."""

    # Slots: one per connection lives as long as it does (idle memory per session).
    __slots__ = ("_channel", "_idle_timeout", "capture")

    def __init__(self, channel: ClientChannel, capture: SessionRecorder | None,
                 idle_timeout: float) -> None:
        self._channel = channel
        self.capture = capture
        self._idle_timeout = idle_timeout

    def write(self, data: bytes) -> None:
        if self.capture is not None:
            self.capture.from_proxy(data)
        self._channel.write(data)

    async def drain(self) -> None:
        """Wait for a client that is slow to read, but not forever: one that stops reading
        is logged out after the idle timeout like one that stops writing (RFC 1939 s3)."""
        if self._channel.write_paused:
            async with asyncio.timeout(self._idle_timeout):
                await self._channel.drain()


async def relay(upstream: UpstreamConnection, client: ClientSink,
                cmd: Command) -> tuple[StatusLine, int]:
    """Send ``cmd`` upstream and stream the answer to the client unchanged; the status and
    the body octets relayed (for the metric)."""
    status = await upstream.request(cmd)
    client.write(status.raw)
    if not status.multiline:
        return status, 0
    return status, await relay_body(upstream.body(), client)


async def relay_body(chunks: BodyChunks, client: ClientSink) -> int:
    """Stream the rest of a multi-line body (still dot-stuffed) and its terminator to the
    client; the body octets relayed."""
    relayed = 0
    async for chunk in chunks:
        client.write(chunk)
        relayed += len(chunk)
        await client.drain()
    client.write(TERMINATOR)
    return relayed


async def relay_capa(upstream: UpstreamConnection, client: ClientSink, cmd: Command) -> None:
    """The upstream's CAPA after login (RFC 2449 section 5), without the capabilities that do
    not hold through the proxy (``pop3.capa.filter_upstream``)."""
    status = await upstream.request(cmd)
    if not status.multiline:
        client.write(status.raw)
        return
    body = await upstream.read_unstuffed(MAX_CAPA_BODY)
    try:
        caps = filter_upstream(parse_capa_body(body))
    except ProtocolError as exc:
        raise UpstreamError(f"bad CAPA response: {exc}", UpstreamFailure.PROTOCOL) from None
    client.write(replies.multiline(status.raw, render_capa(caps)))
