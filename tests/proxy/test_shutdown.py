"""The shutdown notice goes only where it cannot land inside a reply (shutdown.py)."""

from __future__ import annotations

import asyncio

from popproxy.proxy.shutdown import SHUTDOWN_NOTICE, tell_shutdown
from popproxy.proxy.socket_channel import SocketChannel
from tests.support.sockpair import recv_ready, unix_pair


def test_the_notice_is_written_only_to_a_session_waiting_for_a_command() -> None:
    async def main() -> None:
        ours, client = unix_pair()
        channel = SocketChannel(ours)
        assert not tell_shutdown(None)
        assert not tell_shutdown(channel)  # not reading: busy with a reply
        reader = asyncio.ensure_future(channel.read())
        await asyncio.sleep(0)
        assert channel.awaiting_read
        assert tell_shutdown(channel)
        channel.flush()
        assert recv_ready(client) == b"-ERR [SYS/TEMP] server shutting down\r\n"
        assert SHUTDOWN_NOTICE == b"-ERR [SYS/TEMP] server shutting down\r\n"
        reader.cancel()
        channel.abort()
        client.close()

    asyncio.run(main())
