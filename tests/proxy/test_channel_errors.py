"""``channel_errors``: a handshake that never ends fails with ``TimeoutError`` on its own future,
a failure nobody awaits is marked retrieved, ``ChannelClosed`` is a connection error."""

from __future__ import annotations

import asyncio
import gc

import pytest

from popproxy.proxy.channel_errors import ChannelClosed, consume_exception, wait_handshake


def test_wait_handshake_fails_the_future_after_the_timeout() -> None:
    async def main() -> None:
        stalled: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        with pytest.raises(TimeoutError):
            await wait_handshake(stalled, 0.01)  # the client never sends its Finished
        assert isinstance(stalled.exception(), TimeoutError)
        finished: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        asyncio.get_running_loop().call_soon(finished.set_result, None)
        await wait_handshake(finished, 0.01)
        await asyncio.sleep(0.03)  # the timer was cancelled: the done future is untouched
        assert finished.result() is None

    asyncio.run(main())


def test_a_consumed_failure_is_not_reported_as_never_retrieved() -> None:
    reported: list[str] = []

    async def main() -> None:
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(lambda _, context: reported.append(context["message"]))
        for consumed in (True, False):
            future: asyncio.Future[None] = loop.create_future()
            if consumed:
                future.add_done_callback(consume_exception)
            future.set_exception(ChannelClosed("gone"))
            await asyncio.sleep(0)  # the done callback runs
            del future
            gc.collect()
        cancelled: asyncio.Future[None] = loop.create_future()
        cancelled.add_done_callback(consume_exception)
        cancelled.cancel()  # no exception() call on a cancelled future (it would raise)
        await asyncio.sleep(0)

    asyncio.run(main())
    assert reported == ["Future exception was never retrieved"]  # only the unconsumed one
    assert issubclass(ChannelClosed, ConnectionError)
