"""Waiting for connections at stop() and before a replaced store is closed (draining.py):
connections still before their session count as much as sessions."""

from __future__ import annotations

import asyncio
import socket
from typing import cast

from popproxy.proxy.draining import close_after, drain, on_current_stores
from popproxy.proxy.lockout_guard import LockoutGuard
from popproxy.proxy.observe import Observer
from popproxy.proxy.settings import SessionSettings
from popproxy.proxy.socket_channel import SocketChannel
from tests.helpers import make_config
from tests.support.sockpair import recv_ready, unix_pair


def _channel() -> tuple[SocketChannel, socket.socket]:
    """A client connection: the proxy's channel and the client's end."""
    ours, client = unix_pair()
    return SocketChannel(ours), client


def test_a_connection_before_its_session_is_waited_for_within_the_grace() -> None:
    async def main() -> None:
        arrived = asyncio.Event()
        channel, client = _channel()
        connecting = asyncio.ensure_future(arrived.wait())  # as if awaiting a PROXY header
        draining = asyncio.ensure_future(drain(set(), {}, {connecting: channel}, grace=5))
        await asyncio.sleep(0.05)
        assert not draining.done()
        arrived.set()
        await asyncio.wait_for(draining, 1)
        assert not channel.is_closing() and not connecting.cancelled()
        channel.abort()
        client.close()

    asyncio.run(main())


def test_after_the_grace_sessions_are_told_and_connections_aborted() -> None:
    async def main() -> None:
        session_channel, session_client = _channel()
        header_channel, header_client = _channel()
        session = asyncio.ensure_future(session_channel.read())  # waits for a command
        connecting = asyncio.ensure_future(asyncio.sleep(60))
        await asyncio.sleep(0)
        await drain({session}, {session: session_channel}, {connecting: header_channel},
                    grace=0.05)
        await asyncio.sleep(0)  # the notice's coalesced write goes out
        assert recv_ready(session_client) == b"-ERR [SYS/TEMP] server shutting down\r\n"
        assert header_channel.is_closing() and not session_channel.is_closing()
        assert recv_ready(header_client) == b""  # aborted: closed with nothing said
        header_client.settimeout(1)
        assert header_client.recv(10) == b""  # EOF: the descriptor is closed
        assert session.cancelled() and connecting.cancelled()
        session_channel.abort()
        session_client.close()
        header_client.close()

    asyncio.run(main())


def test_nothing_to_wait_for_returns_at_once() -> None:
    async def main() -> None:
        await asyncio.wait_for(drain(set(), {}, {}, grace=60), 1)

    asyncio.run(main())


def test_a_replaced_store_is_closed_after_the_connections_under_it() -> None:
    async def main() -> None:
        closed: list[bool] = []

        async def close() -> None:
            closed.append(True)

        release = asyncio.Event()
        connection = asyncio.ensure_future(release.wait())
        closing = asyncio.ensure_future(close_after(close, {connection}))
        await asyncio.sleep(0.05)
        assert not closed
        release.set()
        await asyncio.wait_for(closing, 1)
        assert closed == [True]
        await close_after(close, set())  # none: closed at once
        assert closed == [True, True]

    asyncio.run(main())


def test_a_connection_starting_after_a_reload_takes_the_current_stores_only() -> None:
    """Its task's first step after a reload replaced the stores (test_server.py has the race):
    the new stores, and the listener it was accepted on as it was."""
    config = make_config(1)
    settings = SessionSettings(policy=config, listener=config.listeners[0], server_tls=None,
                               upstream_tls={}, observer=Observer())
    assert on_current_stores(settings, None, None) is settings  # no reload: nothing made
    store = cast(LockoutGuard, object())
    moved = on_current_stores(settings, store, None)
    assert moved.lockout is store and moved.scan is None
    assert moved.listener is settings.listener and moved.policy is settings.policy
