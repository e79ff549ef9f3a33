"""UpstreamConnection: one request/response API, one reason per failure (issue 16 item 2).

An in-memory channel plays the upstream: the bytes it will send, then EOF.  No sockets.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest

from popproxy.metrics import Metrics
from popproxy.pop3.events import Command
from popproxy.pop3.framing import Unstuffer
from popproxy.pop3.listing import ListingReader
from popproxy.proxy.delivery import spool_body, stream_with_header
from popproxy.proxy.relay import relay, relay_capa
from popproxy.proxy.upstream import (
    LISTINGS,
    UpstreamChannel,
    UpstreamConnection,
    UpstreamError,
    UpstreamFailure,
    read_listings,
)
from tests.helpers import make_config

GREETING = b"+OK ready\r\n"
PARTIAL_BODY = b"+OK 500 octets\r\nSubject: cut\r\n\r\n..dotted line\r\nand mo"


class ScriptedChannel:
    """Sends ``script`` (one ``read`` per item), then EOF; records what the proxy wrote."""

    def __init__(self, script: list[bytes]) -> None:
        self._script = list(script)
        self.written = bytearray()
        self.closed = False

    @property
    def unread(self) -> int:
        return 0

    async def read(self, timeout: float | None = None) -> bytes:
        return self._script.pop(0) if self._script else b""

    def write(self, data: bytes) -> None:
        self.written += data

    def flush(self) -> None:
        pass

    def quick_ack(self) -> None:
        pass

    def rest(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = True

    async def start_tls(self, ctx: ssl.SSLContext, *, server_side: bool,
                        server_hostname: str | None = None, timeout: float = 10.0) -> None:
        raise AssertionError("plain upstream")


class Client:
    """A ``ClientSink`` that keeps what it was sent."""

    def __init__(self) -> None:
        self.received = bytearray()

    def write(self, data: bytes) -> None:
        self.received += data

    async def drain(self) -> None:
        pass


def _connect(*replies: bytes) -> UpstreamConnection:
    """A logged-in-like connection whose next answers are ``replies`` (then EOF)."""
    channel = ScriptedChannel([GREETING, *replies])

    async def connect(host: str, port: int) -> UpstreamChannel:
        return channel

    settings = make_config(110).upstream
    return asyncio.run(UpstreamConnection.open(settings, None, connect=connect))


def _failure(call: Callable[[UpstreamConnection], Coroutine[Any, Any, object]],
             *replies: bytes) -> UpstreamFailure:
    upstream = _connect(*replies)
    with pytest.raises(UpstreamError) as caught:
        asyncio.run(call(upstream))
    return caught.value.reason


def _retr() -> Command:
    return Command("RETR", (b"1",))


async def _relay(up: UpstreamConnection) -> None:
    await relay(up, Client(), _retr())


async def _relay_capa(up: UpstreamConnection) -> None:
    await relay_capa(up, Client(), Command("CAPA"))


async def _listing(up: UpstreamConnection) -> None:  # MailboxView's UIDL/LIST read
    if (await up.request(Command("UIDL"))).multiline:
        reader, unstuffer = ListingReader(), Unstuffer()
        async for chunk in up.body():
            reader.feed(unstuffer.feed(chunk))


async def _spool(up: UpstreamConnection, tmp: Path) -> None:  # a message spooled for a scan
    await up.request(_retr())
    await spool_body(up.body(), tmp / "spooled", None)


async def _streamed(up: UpstreamConnection) -> None:  # a tagged message, header replaced
    await stream_with_header(up, Client(), _retr(), 500, None, lambda head: head, 1 << 20)


async def _capabilities(up: UpstreamConnection) -> None:  # before login (pipelining check)
    await up.capabilities()


PATHS = {"relay": _relay, "relay_capa": _relay_capa, "listing": _listing,
         "streamed": _streamed, "capabilities": _capabilities}
CUT_ANSWERS = {
    "before the status line": b"",
    "inside the status line": b"+OK 500 oct",
    "inside the body": PARTIAL_BODY,
    "after a body line": b"+OK\r\nTOP\r\n",
}


@pytest.mark.parametrize("cut", list(CUT_ANSWERS))
@pytest.mark.parametrize("path", [*PATHS, "spool"])
def test_an_upstream_closing_early_is_closed_from_every_path(path: str, cut: str,
                                                              tmp_path: Path) -> None:
    answer = CUT_ANSWERS[cut]
    replies = (answer,) if answer else ()
    if path == "spool":
        reason = _failure(lambda up: _spool(up, tmp_path), *replies)
    else:
        reason = _failure(PATHS[path], *replies)
    assert reason is UpstreamFailure.CLOSED


def test_read_unstuffed_is_bounded() -> None:
    upstream = _connect(b"+OK\r\n" + b"x" * 100 + b"\r\n.\r\n")

    async def read() -> bytes:
        await upstream.request(Command("UIDL"))
        return await upstream.read_unstuffed(50)

    with pytest.raises(UpstreamError) as caught:
        asyncio.run(read())
    assert caught.value.reason is UpstreamFailure.PROTOCOL


def test_garbage_is_a_protocol_failure_not_a_close() -> None:
    reason = _failure(_relay, b"Hello, this is not POP3\r\n")
    assert reason is UpstreamFailure.PROTOCOL


def test_every_reason_is_a_prepared_metric_label() -> None:
    metrics = Metrics()
    metrics.prepare_upstream("x")
    (family,) = [m for m in metrics.upstream_errors.collect()]
    prepared = {s.labels["reason"] for s in family.samples if s.name.endswith("_total")}
    assert prepared == {str(reason) for reason in UpstreamFailure}


def _listings(pipelining: bool, *replies: bytes) -> tuple[list[dict[int, bytes]], bytes]:
    upstream = _connect(*replies)
    upstream.pipelining = pipelining
    channel = upstream._channel
    assert isinstance(channel, ScriptedChannel)
    channel.written.clear()
    answers = asyncio.run(read_listings(upstream, LISTINGS))
    return answers, bytes(channel.written)


UIDL_ANSWER = b"+OK\r\n1 aaa\r\n2 bbb\r\n.\r\n"
LIST_ANSWER = b"+OK 2 messages\r\n1 120\r\n2 340\r\n.\r\n"


def test_listings_share_one_write_where_the_upstream_pipelines() -> None:
    # RFC 2449 s6.6: one round trip for UIDL and LIST; both answers in one read, too.
    answers, written = _listings(True, UIDL_ANSWER + LIST_ANSWER)
    assert written == b"UIDL\r\nLIST\r\n"
    assert answers == [{1: b"aaa", 2: b"bbb"}, {1: b"120", 2: b"340"}]


def test_a_listing_split_across_reads_is_read_as_it_comes() -> None:
    # Not all received with its status line: parsed chunk by chunk (_listing_answer), the
    # same entries as a whole one (read_listings' synchronous fast path).
    answers, _ = _listings(True, UIDL_ANSWER[:12], UIDL_ANSWER[12:] + LIST_ANSWER[:20],
                           LIST_ANSWER[20:])
    assert answers == [{1: b"aaa", 2: b"bbb"}, {1: b"120", 2: b"340"}]


def test_listings_go_one_at_a_time_without_pipelining() -> None:
    answers, written = _listings(False, UIDL_ANSWER, LIST_ANSWER)
    assert written == b"UIDL\r\nLIST\r\n"
    assert answers == [{1: b"aaa", 2: b"bbb"}, {1: b"120", 2: b"340"}]
    # LIST waits for UIDL's answer: after a refusal it is never sent.
    upstream = _connect(b"-ERR no UIDL\r\n")
    channel = upstream._channel
    assert isinstance(channel, ScriptedChannel)
    channel.written.clear()
    with pytest.raises(UpstreamError):
        asyncio.run(read_listings(upstream, LISTINGS))
    assert bytes(channel.written) == b"UIDL\r\n"


def test_a_refused_pipelined_listing_fails_the_session() -> None:
    with pytest.raises(UpstreamError) as caught:
        _listings(True, b"-ERR no UIDL\r\n" + LIST_ANSWER)
    assert caught.value.reason is UpstreamFailure.PROTOCOL


def _wrong_version() -> ssl.SSLError:
    exc = ssl.SSLError(1, "[SSL: WRONG_VERSION_NUMBER] wrong version number (_ssl.c:1006)")
    exc.reason = "WRONG_VERSION_NUMBER"
    return exc


@pytest.mark.parametrize(("exc", "said"), [
    (ConnectionRefusedError(111, "Connect call failed ('10.0.0.5', 110)"), "Connection refused"),
    (TimeoutError(), "no answer within 10 s"),
    (_wrong_version(), "wrong version number (a plain POP3 port? see the upstream's mode)"),
    (ssl.SSLEOFError(8, "EOF occurred in violation of protocol"),
     "EOF occurred in violation of protocol"),  # (errno 8 is OpenSSL's, not ENOEXEC)
    (OSError("Multiple exceptions: [Errno 111] Connect call failed ('::1', 110, 0, 0), "
             "[Errno 111] Connect call failed ('127.0.0.1', 110)"),
     "Multiple exceptions: [Errno 111] Connect call failed ('::1', 110, 0, 0), "
     "[Errno 111] Connect call failed ('127.0.0.1', 110)"),
    (ConnectionResetError("connection lost during TLS handshake"),
     "connection lost during TLS handshake"),
])
def test_an_upstream_failure_says_why_in_words_an_admin_can_act_on(exc: BaseException,
                                                                   said: str) -> None:
    """Regression: the log and ``popproxy test-login`` said "connect failed:
    ConnectionRefusedError" and "TLS handshake failed: SSLError", with no address or reason."""
    from popproxy.proxy.channel_errors import why_failed as _why

    assert _why(exc, 10.0) == said
