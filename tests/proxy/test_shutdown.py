"""The shutdown notice goes only where it cannot land inside a reply (shutdown.py)."""

from __future__ import annotations

import asyncio

from popproxy.proxy.channel import Channel
from popproxy.proxy.shutdown import SHUTDOWN_NOTICE, tell_shutdown
from tests.support.harness import FakeTransport


def test_the_notice_is_written_only_to_a_session_waiting_for_a_command() -> None:
    async def main() -> None:
        transport = FakeTransport()
        channel = Channel(None)
        channel.connection_made(transport)
        assert not tell_shutdown(None)
        assert not tell_shutdown(channel)  # not reading: busy with a reply
        reader = asyncio.ensure_future(channel.read())
        await asyncio.sleep(0)
        assert channel.awaiting_read
        assert tell_shutdown(channel)
        assert bytes(transport.sent) == b"-ERR [SYS/TEMP] server shutting down\r\n"
        assert bytes(transport.sent) == SHUTDOWN_NOTICE
        reader.cancel()

    asyncio.run(main())
