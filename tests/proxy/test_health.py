"""The upstream probe: a POP3 greeting, every upstream of the current policy, cached, gauged.

Real sockets on loopback: the demo upstream greets +OK, a silent server never greets, a
server that answers -ERR, and a closed port.  Dovecot in all three modes is in
tests/integration/test_dovecot_health.py.
"""

from __future__ import annotations

import asyncio
import ssl
from dataclasses import dataclass, field

import pytest

from popproxy.metrics import Metrics
from popproxy.policy import Policy, Upstream
from popproxy.proxy import health
from popproxy.proxy.demo_upstream import DemoUpstream
from popproxy.proxy.health import PROBE_CACHE_SECONDS, UpstreamProbe
from popproxy.proxy.tasks import spawn
from tests.helpers import make_config
from tests.support.ports import free_port


@dataclass
class Target:
    """Stands in for ProxyServer: the policy in force and its upstream TLS contexts."""

    config: Policy
    upstream_tls: dict[str, ssl.SSLContext | None] = field(default_factory=dict)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def _server(greeting: bytes | None) -> asyncio.Server:
    """A loopback server that sends ``greeting`` (None: says nothing) and holds the line."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if greeting is not None:
            writer.write(greeting)
        await reader.read()
        writer.close()

    return await asyncio.start_server(serve, "127.0.0.1", 0)


def _port(server: asyncio.Server) -> int:
    return int(server.sockets[0].getsockname()[1])


def _policy(default_port: int, **others: int) -> Policy:
    upstreams = {name: {"host": "127.0.0.1", "port": port, "connect_timeout": 1,
                        "greeting_timeout": 1} for name, port in others.items()}
    return make_config(default_port, upstreams=upstreams)


def _gauge(metrics: Metrics, upstream: str) -> float | None:
    return metrics.registry.get_sample_value("popproxy_upstream_up", {"upstream": upstream})


def test_greeting_required_not_just_a_tcp_connect(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(health, "PROBE_TIMEOUT", 0.5)

    async def main() -> tuple[dict[str, bool], bool, Metrics]:
        demo, silent, refusing = DemoUpstream(), await _server(None), await _server(b"-ERR no\r\n")
        await demo.start("127.0.0.1", 0)
        metrics = Metrics()
        policy = _policy(demo.port, silent=_port(silent), refusing=_port(refusing),
                         closed=free_port())
        probe = UpstreamProbe(Target(policy), metrics)
        try:
            return await probe.check(), await probe.ready(), metrics
        finally:
            await demo.stop()
            silent.close()
            refusing.close()

    results, ready, metrics = asyncio.run(main())
    assert results == {"default": True, "silent": False, "refusing": False, "closed": False}
    assert ready is False  # /readyz: every upstream must greet
    assert _gauge(metrics, "default") == 1.0
    assert [_gauge(metrics, n) for n in ("silent", "refusing", "closed")] == [0.0, 0.0, 0.0]


def test_follows_reloads_and_drops_removed_upstreams() -> None:
    async def main() -> None:
        first, second = DemoUpstream(), DemoUpstream()
        await first.start("127.0.0.1", 0)
        await second.start("127.0.0.1", 0)
        clock, metrics = Clock(), Metrics()
        target = Target(_policy(first.port, old=free_port()))
        probe = UpstreamProbe(target, metrics, clock=clock)
        try:
            assert await probe.check() == {"default": True, "old": False}
            assert _gauge(metrics, "old") == 0.0
            # SIGHUP: a new policy routes to other servers; the next probe follows it.
            target.config = _policy(second.port, new=first.port)
            clock.now += PROBE_CACHE_SECONDS + 0.1
            assert await probe.check() == {"default": True, "new": True}
            assert await probe.ready() is True
            assert _gauge(metrics, "old") is None  # no alert for a server nobody uses
            assert _gauge(metrics, "new") == 1.0
        finally:
            await first.stop()
            await second.stop()

    asyncio.run(main())


def test_results_are_cached_and_concurrent_requests_share_one_probe() -> None:
    calls: list[str] = []

    async def greeter(settings: Upstream, tls: ssl.SSLContext | None) -> None:
        calls.append(settings.host)
        await asyncio.sleep(0.05)

    async def main() -> None:
        clock = Clock()
        probe = UpstreamProbe(Target(_policy(110)), Metrics(), greeter=greeter, clock=clock)
        answers = await asyncio.gather(*(probe.ready() for _ in range(20)))
        assert answers == [True] * 20
        assert len(calls) == 1  # a scrape storm costs the legacy server one connection
        clock.now += PROBE_CACHE_SECONDS - 0.1
        await probe.ready()
        assert len(calls) == 1
        clock.now += 0.2
        await probe.ready()
        assert len(calls) == 2

    asyncio.run(main())


def test_background_loop_updates_the_gauge_without_requests() -> None:
    state = {"up": True}

    async def greeter(settings: Upstream, tls: ssl.SSLContext | None) -> None:
        if not state["up"]:
            raise OSError("connection refused")

    async def main() -> None:
        clock, metrics = Clock(), Metrics()
        probe = UpstreamProbe(Target(_policy(110)), metrics, greeter=greeter, clock=clock)
        task = spawn(probe.run(interval=0.01), "test-probe")
        try:
            await asyncio.sleep(0.05)
            assert _gauge(metrics, "default") == 1.0
            state["up"] = False
            clock.now += PROBE_CACHE_SECONDS + 1
            await asyncio.sleep(0.05)
            assert _gauge(metrics, "default") == 0.0
        finally:
            task.cancel()

    asyncio.run(main())


def test_logs_changes_not_every_probe(caplog: pytest.LogCaptureFixture) -> None:
    state = {"up": False}

    async def greeter(settings: Upstream, tls: ssl.SSLContext | None) -> None:
        if not state["up"]:
            raise TimeoutError

    async def main() -> None:
        clock = Clock()
        probe = UpstreamProbe(Target(_policy(110)), Metrics(), greeter=greeter, clock=clock)
        for up in (False, False, True, True):
            state["up"] = up
            clock.now += PROBE_CACHE_SECONDS + 1
            await probe.check()

    with caplog.at_level("INFO", logger="popproxy.health"):
        asyncio.run(main())
    assert [r.getMessage() for r in caplog.records] == [
        "upstream default is down: timeout (no greeting within 2 s)",
        "upstream default is up again"]
