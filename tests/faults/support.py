"""Shared pieces of the fault tests: a scripted upstream, an observed proxy, health checks.

The proxy under test always has two upstreams: the healthy default one (a ``DemoUpstream``,
user ``demo``/``demo``) and ``faulty`` (a ``FakeUpstream`` doing the fault), routed to for the
user ``victim``.  So one proxy shows both the fault and that other sessions are still served.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import poplib
import socket
import struct
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

from popproxy.auditlog import AuditLog
from popproxy.metrics import Metrics
from popproxy.policy import Policy
from popproxy.proxy.demo_upstream import DemoUpstream
from popproxy.proxy.observe import Observer
from tests.helpers import (
    LoopbackServer,
    LoopThread,
    RunningProxy,
    make_config,
    running_demo,
    running_proxy,
)
from tests.integration.rawpop import RawPOP3, wait_for

VICTIM = "victim"
SYS_TEMP = b"-ERR [SYS/TEMP] "
UPSTREAM_DOWN = b"-ERR [SYS/TEMP] upstream server unavailable, try again later\r\n"

Then = Literal["continue", "hang", "reset", "close"]


@dataclass(frozen=True)
class Reply:
    """What the fake upstream sends for one command, and what it does next.

    ``hang``: say nothing more (but keep reading, so a late QUIT would still be seen);
    ``reset``: send a TCP RST; ``close``: close with a FIN.
    """

    data: bytes = b"+OK\r\n"
    then: Then = "continue"


@dataclass
class FakeUpstream(LoopbackServer):
    """A scripted POP3 upstream on the test loop: ``greeting`` (None: never greets), then one
    ``Reply`` per command verb (``default`` for verbs not in ``replies``).

    ``verbs`` records every command line it received (verbs only), across connections, also
    while hanging; ``closed_by_proxy`` counts connections the proxy closed (EOF or RST seen).
    """

    greeting: bytes | None = b"+OK fake upstream ready\r\n"
    replies: dict[str, Reply] = field(default_factory=dict)
    default: Reply = Reply()
    verbs: list[str] = field(default_factory=list)
    connections: int = 0
    closed_by_proxy: int = 0

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            if self.greeting is None:
                await self._until_eof(reader)
                return
            writer.write(self.greeting)
            while True:
                line = await reader.readline()
                if not line:
                    self.closed_by_proxy += 1
                    return
                if line.strip().upper() == b"CAPA" and "CAPA" not in self.replies:
                    # An RFC 1939 server without CAPA (RFC 2449): not recorded in ``verbs``.
                    writer.write(b"-ERR unknown command\r\n")
                    continue
                verb = self._record(line)

                reply = self.replies.get(verb, self.default)
                writer.write(reply.data)
                await writer.drain()
                if reply.then == "hang":
                    await self._until_eof(reader)
                    return
                if reply.then == "reset":
                    await asyncio.sleep(0.2)  # let the proxy read what was sent first
                    sock = writer.get_extra_info("socket")
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    writer.transport.abort()
                    return
                if reply.then == "close":
                    writer.close()
                    return
        except (ConnectionError, OSError):
            self.closed_by_proxy += 1
        finally:
            if not writer.transport.is_closing():
                writer.close()

    def _record(self, line: bytes) -> str:
        verb = line.split(b" ", 1)[0].strip().upper().decode("ascii", "replace")
        self.verbs.append(verb)
        return verb

    async def _until_eof(self, reader: asyncio.StreamReader) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            while line := await reader.readline():
                self._record(line)
        self.closed_by_proxy += 1


@dataclass
class Observed:
    """An ``Observer`` with its own registry and an audit log in memory."""

    observer: Observer
    stream: io.StringIO

    @classmethod
    def new(cls) -> Observed:
        stream = io.StringIO()
        return cls(Observer(Metrics(), AuditLog(stream)), stream)

    def sample(self, name: str, **labels: str) -> float:
        value = self.observer.metrics.registry.get_sample_value(name, labels)
        return 0.0 if value is None else value

    def total(self, name: str, **labels: str) -> float:
        """The sum of every sample called ``name`` whose labels include ``labels``."""
        return sum(
            sample.value
            for family in self.observer.metrics.registry.collect()
            for sample in family.samples
            if sample.name == name and labels.items() <= sample.labels.items()
        )

    def events(self, kind: str | None = None, **fields: Any) -> list[dict[str, Any]]:
        records = [json.loads(line) for line in self.stream.getvalue().splitlines()]
        return [r for r in records if (kind is None or r["event"] == kind)
                and all(r.get(k) == v for k, v in fields.items())]


def faulty_upstream(port: int, **settings: object) -> dict[str, object]:
    """Settings of the ``faulty`` upstream: short timeouts unless overridden."""
    return {"host": "127.0.0.1", "port": port, "connect_timeout": 2, "greeting_timeout": 2,
            "response_timeout": 2, **settings}


def fault_config(demo_port: int, faulty: dict[str, object], **overrides: Any) -> Policy:
    """A plain-listener proxy: ``demo`` goes to the demo upstream, ``victim`` to ``faulty``."""
    return make_config(demo_port, upstreams={"faulty": faulty},
                       routes=[{"match": VICTIM, "upstream": "faulty"}], **overrides)


@dataclass
class FaultRig:
    proxy: RunningProxy
    demo: DemoUpstream
    observed: Observed

    @property
    def port(self) -> int:
        return self.proxy.port

    def idle(self, timeout: float = 5.0) -> None:
        wait_for(lambda: self.proxy.server.session_count == 0, timeout, "sessions to end")


@contextmanager
def fault_rig(loop: LoopThread, faulty: dict[str, object], **overrides: Any) -> Iterator[FaultRig]:
    """A demo upstream and an observed proxy in front of it and of ``faulty``."""
    observed = Observed.new()
    with running_demo(loop) as demo:
        config = fault_config(demo.port, faulty, **overrides)
        with running_proxy(config, loop, observed.observer) as proxy:
            yield FaultRig(proxy, demo, observed)


@contextmanager
def fake_upstream(loop: LoopThread, fake: FakeUpstream) -> Iterator[int]:
    port = loop.call(fake.start())
    try:
        yield port
    finally:
        loop.call(fake.stop())


def unused_port() -> int:
    """A loopback port nobody listens on (connections are refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def demo_session(port: int, host: str = "127.0.0.1", source: str | None = None) -> float:
    """A complete, ordinary session (login, STAT, RETR, QUIT); returns its duration."""
    started = time.monotonic()
    client = poplib.POP3(host, port, timeout=10) if source is None else _bound_pop3(
        host, port, source)
    try:
        client.user("demo")
        client.pass_("demo")
        assert client.stat()[0] == 3
        assert b"This message came through the proxy." in b"\n".join(client.retr(1)[1])
        assert client.quit().startswith(b"+OK")
    finally:
        client.close()
    return time.monotonic() - started


def _bound_pop3(host: str, port: int, source: str) -> poplib.POP3:
    """poplib cannot choose the source address; this subclass connects from ``source``."""

    class Bound(poplib.POP3):
        def _create_socket(self, timeout: float) -> socket.socket:
            return socket.create_connection((host, port), timeout, source_address=(source, 0))

    return Bound(host, port, timeout=10)


def victim_login(port: int) -> RawPOP3:
    """Log ``victim`` in through the proxy (the fake upstream says +OK to USER and PASS)."""
    client = RawPOP3(port)
    try:
        client.login(VICTIM, "secret")
    except BaseException:
        client.close()
        raise
    return client
