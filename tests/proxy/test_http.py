"""The operators' HTTP endpoint: /metrics, /healthz, /readyz, GET only, one request each."""

from __future__ import annotations

import asyncio
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable

import pytest

from popproxy.metrics import Metrics
from popproxy.proxy.http import MAX_REQUEST_HEAD, OpsServer
from tests.helpers import LoopThread


def test_ops_endpoint(loop_thread: LoopThread) -> None:
    metrics = Metrics()
    metrics.logins.labels("ok").inc()
    ready = {"value": True}

    async def probe() -> bool:
        return ready["value"]

    ops = OpsServer(metrics.registry, probe)
    loop_thread.call(ops.start("127.0.0.1", 0))
    try:
        base = f"http://127.0.0.1:{ops.port}"
        text = urllib.request.urlopen(base + "/metrics", timeout=5).read().decode()
        assert 'popproxy_logins_total{result="ok"} 1.0' in text
        assert urllib.request.urlopen(base + "/healthz", timeout=5).read() == b"ok\n"
        assert urllib.request.urlopen(base + "/readyz", timeout=5).status == 200
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(base + "/nope", timeout=5)
        assert info.value.code == 404
    finally:
        loop_thread.call(ops.stop())


async def _request(port: int, head: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(head)
    answer = await reader.read()
    writer.close()
    return answer


def _with_ops(ready: Callable[[], Awaitable[bool]],
              script: Callable[[int], Awaitable[None]]) -> None:
    async def main() -> None:
        ops = OpsServer(Metrics().registry, ready)
        await ops.start("127.0.0.1", 0)
        try:
            await script(ops.port)
        finally:
            await ops.stop()

    asyncio.run(main())


def test_only_get_is_served() -> None:
    async def ready() -> bool:
        return True

    async def script(port: int) -> None:
        answer = await _request(port, b"POST /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        assert answer.startswith(b"HTTP/1.1 405 Method Not Allowed\r\n")
        assert answer.endswith(b"\r\n\r\nGET only\n")

    _with_ops(ready, script)


def test_not_ready_is_503_and_the_probe_result_is_cached() -> None:
    calls: list[int] = []

    async def ready() -> bool:
        calls.append(1)
        return False

    async def script(port: int) -> None:
        for _ in range(3):
            answer = await _request(port, b"GET /readyz?verbose HTTP/1.1\r\n\r\n")
            assert answer.startswith(b"HTTP/1.1 503 Service Unavailable\r\n")
            assert b"Content-Length: 21\r\n" in answer
        assert len(calls) == 1  # READY_CACHE_SECONDS: one probe for the three requests

    _with_ops(ready, script)


def test_an_oversized_or_truncated_request_gets_no_answer() -> None:
    async def ready() -> bool:
        return True

    async def script(port: int) -> None:
        padding = b"X-Pad: " + b"a" * MAX_REQUEST_HEAD + b"\r\n"
        assert await _request(port, b"GET /healthz HTTP/1.1\r\n" + padding + b"\r\n") == b""
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /healthz HTTP/1.1\r\n")
        writer.write_eof()  # the head never ends
        assert await reader.read() == b""
        writer.close()

    _with_ops(ready, script)

