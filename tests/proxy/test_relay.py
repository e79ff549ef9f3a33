"""Relaying upstream answers to the client: unchanged bodies, filtered CAPA, bounded drain.

The upstream is a ``ScriptedChannel`` (tests/proxy/test_upstream.py) whose answer arrives in
the chunks a feed cuts it into: whole, one byte at a time, random splits.  No sockets, but
for the client writer's own test (a ``SocketChannel`` on a socket pair).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from popproxy.pop3.events import Command
from popproxy.pop3.limits import MAX_CAPA_LINE
from popproxy.proxy.relay import TERMINATOR, ClientWriter, relay, relay_body, relay_capa
from popproxy.proxy.socket_channel import SocketChannel
from popproxy.proxy.upstream import UpstreamChannel, UpstreamConnection, UpstreamError
from popproxy.proxy.upstream import UpstreamFailure as Failure
from tests.helpers import make_config
from tests.proxy.test_upstream import GREETING, Client, ScriptedChannel
from tests.support.feeds import FEED_IDS, FEEDS, Feed
from tests.support.sockpair import recv_ready, unix_pair

BODY = b"Subject: hi\r\n\r\n..a stuffed line\r\nlast\r\n"
CAPA = (b"+OK capabilities follow\r\nTOP\r\nSTLS\r\nSASL PLAIN\r\nUIDL\r\nUSER\r\n"
        b"IMPLEMENTATION Dovecot\r\nPIPELINING\r\n.\r\n")


def _upstream(answer: bytes, feed: Feed) -> tuple[UpstreamConnection, ScriptedChannel]:
    channel = ScriptedChannel([GREETING, *feed(answer)])

    async def connect(host: str, port: int) -> UpstreamChannel:
        return channel

    conn = asyncio.run(UpstreamConnection.open(make_config(110).upstream, None, connect))
    return conn, channel


@pytest.mark.parametrize("feed", FEEDS, ids=FEED_IDS)
def test_a_relayed_body_is_passed_on_still_stuffed_and_terminated(feed: Feed) -> None:
    upstream, channel = _upstream(b"+OK 41 octets\r\n" + BODY + b".\r\n", feed)
    client = Client()
    status, relayed = asyncio.run(relay(upstream, client, Command("RETR", (b"1",))))
    assert status.multiline
    assert bytes(client.received) == b"+OK 41 octets\r\n" + BODY + TERMINATOR
    assert relayed == len(BODY)
    assert bytes(channel.written) == b"RETR 1\r\n"


def test_a_single_line_answer_is_relayed_alone() -> None:
    upstream, _ = _upstream(b"-ERR no such message\r\n", FEEDS[0])
    client = Client()
    status, relayed = asyncio.run(relay(upstream, client, Command("RETR", (b"9",))))
    assert (status.ok, relayed) == (False, 0)
    assert bytes(client.received) == b"-ERR no such message\r\n"


def test_relay_body_counts_octets_and_terminates() -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for chunk in (b"a\r\n", b"..b\r\n"):
            yield chunk

    client = Client()
    relayed = asyncio.run(relay_body(chunks(), client))  # type: ignore[arg-type]
    assert relayed == 8
    assert bytes(client.received) == b"a\r\n..b\r\n.\r\n"


@pytest.mark.parametrize("feed", FEEDS, ids=FEED_IDS)
def test_capa_after_login_drops_what_the_proxy_does_not_offer(feed: Feed) -> None:
    upstream, _ = _upstream(CAPA, feed)
    client = Client()
    asyncio.run(relay_capa(upstream, client, Command("CAPA")))
    # RFC 2449 section 5: STLS, SASL and USER describe the upstream's login, not ours.
    assert bytes(client.received) == (b"+OK capabilities follow\r\nTOP\r\nUIDL\r\n"
                                      b"PIPELINING\r\n.\r\n")


def test_capa_refused_upstream_is_passed_on() -> None:
    upstream, _ = _upstream(b"-ERR unknown command\r\n", FEEDS[0])
    client = Client()
    asyncio.run(relay_capa(upstream, client, Command("CAPA")))
    assert bytes(client.received) == b"-ERR unknown command\r\n"


def test_a_garbled_capa_list_is_an_upstream_protocol_failure() -> None:
    too_long = b"X" * MAX_CAPA_LINE  # RFC 2449 section 6.1: 512 octets with CRLF
    upstream, _ = _upstream(b"+OK\r\n" + too_long + b"\r\n.\r\n", FEEDS[0])
    client = Client()
    with pytest.raises(UpstreamError) as caught:
        asyncio.run(relay_capa(upstream, client, Command("CAPA")))
    assert caught.value.reason is Failure.PROTOCOL
    assert client.received == b""  # nothing half-written to the client


def test_client_writer_writes_through_and_drains_at_once_when_not_paused() -> None:
    async def main() -> bytes:
        ours, client = unix_pair()
        channel = SocketChannel(ours)
        writer = ClientWriter(channel, None, idle_timeout=0.01)
        writer.write(b"+OK\r\n")
        await writer.drain()  # not paused: returns at once (the idle timeout never fires)
        channel.flush()
        sent = recv_ready(client)
        channel.abort()
        client.close()
        return sent

    assert asyncio.run(main()) == b"+OK\r\n"
