"""Test helpers: run the proxy (and the demo upstream) on a background event loop."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

from popproxy.policy import Policy
from popproxy.proxy.demo_upstream import DemoUpstream
from popproxy.proxy.observe import Observer
from popproxy.proxy.server import ProxyServer

T = TypeVar("T")


class LoopThread:
    """An asyncio loop in a daemon thread; ``call`` runs a coroutine there and waits.
    ``loop``: another implementation's loop (uvloop's), instead of a new standard one."""

    def __init__(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self.loop = loop or asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()

    def call(self, coro: Coroutine[Any, Any, T], timeout: float = 30) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)


class LoopbackServer:
    """A test server on a free loopback port: ``start()`` listens and returns the port,
    ``stop()`` closes the listener; subclasses answer connections in ``_serve``."""

    _server: asyncio.Server | None = None

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return int(self._server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        raise NotImplementedError


def make_config(upstream_port: int, **overrides: Any) -> Policy:
    """A config with one plain listener on an ephemeral port, fronting 127.0.0.1:upstream_port."""
    data: dict[str, Any] = {
        "listeners": [{"name": "pop3", "host": "127.0.0.1", "port": 1, "mode": "plain",
                       "allow_plaintext_login": True}],
        "upstream": {"host": "127.0.0.1", "port": upstream_port, "connect_timeout": 5,
                     "greeting_timeout": 5, "response_timeout": 30},
    }
    # Tests check failures by the dozen: no failure delay unless a test asks for one.
    data["limits"] = {"auth_failure_delay": 0}
    # ... and no lockout counters (tests of lockouts turn them on explicitly).
    data["lockout"] = {"enabled": False}
    # ... and no scanning: relay tests compare bytes with the upstream's (scan tests enable it).
    data["scan"] = {"enabled": False}
    for key, value in overrides.items():
        data[key] = {**data["limits"], **value} if key == "limits" else value
    return Policy.model_validate(data)


@dataclass
class RunningProxy:
    server: ProxyServer
    port: int
    loop: LoopThread


@contextmanager
def running_proxy(
    config: Policy, loop: LoopThread | None = None, observer: Observer | None = None
) -> Iterator[RunningProxy]:
    """Start a ProxyServer (listener ports forced to 0) and stop it afterwards."""
    own_loop = loop is None
    lt = loop or LoopThread()
    server = ProxyServer(config, observer)
    lt.call(server.start({lst.name: 0 for lst in config.listeners}))
    try:
        yield RunningProxy(server, server.ports[config.listeners[0].name], lt)
    finally:
        lt.call(server.stop(grace=1))
        if own_loop:
            lt.close()


@contextmanager
def running_demo(loop: LoopThread, demo: DemoUpstream | None = None) -> Iterator[DemoUpstream]:
    demo = demo or DemoUpstream()
    loop.call(demo.start())
    try:
        yield demo
    finally:
        loop.call(demo.stop())
