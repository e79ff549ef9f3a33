"""An in-memory session harness: a real ``Session`` between a scripted client and a scripted
upstream, with no sockets and no sleeps (in the style of h11's ``ConnectionPair`` and
mitmproxy's playbook tests).

The client side is a ``Channel`` on a ``FakeTransport``; the upstream side is a ``Channel``
made by the session's injectable connector (``SessionSettings.upstream_connect``) and answered
by ``ScriptedUpstream``, which replies to each command line from a table.  ``settle`` runs the
loop until the session waits for the client again.

    async with SessionPair(config, ScriptedUpstream({"STAT": b"+OK 0 0\\r\\n"})) as pair:
        assert await pair.exchange(b"USER a\\r\\n") == b"+OK send PASS\\r\\n"
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from popproxy.metrics import Metrics
from popproxy.policy import Policy
from popproxy.proxy.channel import Channel
from popproxy.proxy.failure_timing import FailureTiming, UpstreamKey
from popproxy.proxy.observe import Observer
from popproxy.proxy.session import Session
from popproxy.proxy.settings import SessionSettings
from popproxy.proxy.upstream import UpstreamChannel

# Loop iterations ``settle`` allows before it calls the session stuck: every step of a
# scripted exchange takes a handful; a session that never waits for the client is a bug.
MAX_SETTLE_STEPS = 10_000


class FakeTransport(asyncio.Transport):
    """Collects what its protocol writes; ``on_write`` (if set) sees each write."""

    def __init__(self, on_write: Callable[[bytes], None] | None = None) -> None:
        super().__init__()
        self.sent = bytearray()
        self.closed = False
        self.aborted = False
        self._on_write = on_write

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.sent += data
        if self._on_write is not None:
            self._on_write(bytes(data))

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = self.aborted = True

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default


class NoFailureFloor(FailureTiming):
    """Learns no refusal times, so a refused login is answered at once (the floor has its own
    tests in test_login_timing.py); the harness's default."""

    def observe(self, key: UpstreamKey, seconds: float) -> None:
        pass


def feed(channel: Channel, data: bytes) -> None:
    """Deliver ``data`` to ``channel`` as the event loop would (b"": the peer closed)."""
    if not data:
        channel.eof_received()
        return
    buffer = channel.get_buffer(len(data))
    buffer[: len(data)] = data
    channel.buffer_updated(len(data))


@dataclass
class ScriptedUpstream:
    """Answers each command line by its verb (``default`` for the rest); greets first."""

    answers: Mapping[str, bytes] = field(default_factory=dict)
    default: bytes = b"+OK\r\n"
    greeting: bytes = b"+OK scripted upstream\r\n"
    lines: list[bytes] = field(default_factory=list)  # every line the proxy sent
    connections: list[FakeTransport] = field(default_factory=list)

    async def connect(self, host: str, port: int) -> UpstreamChannel:
        channel = Channel()
        pending = bytearray()

        def received(data: bytes) -> None:
            pending.extend(data)
            while (end := pending.find(b"\r\n")) >= 0:
                line = bytes(pending[:end])
                del pending[: end + 2]
                self.lines.append(line)
                verb = line.split(b" ", 1)[0].decode("ascii", "replace").upper()
                answer = self.answers.get(verb, self.default)
                asyncio.get_running_loop().call_soon(feed, channel, answer)

        transport = FakeTransport(received)
        self.connections.append(transport)
        channel.connection_made(transport)
        feed(channel, self.greeting)
        return channel

    @property
    def verbs(self) -> list[str]:
        return [line.split(b" ", 1)[0].decode("ascii", "replace") for line in self.lines]


class SessionPair:
    """One ``Session`` (as a task) between an in-memory client and a ``ScriptedUpstream``."""

    def __init__(self, config: Policy, upstream: ScriptedUpstream | None = None,
                 **settings: Any) -> None:
        self.config = config
        self.upstream = upstream or ScriptedUpstream()
        self.metrics = Metrics()
        self._settings = {"failure_timing": NoFailureFloor(), **settings}
        self.transport = FakeTransport()
        self._received = 0  # octets of transport.sent already returned by ``received``
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> SessionPair:
        listener = self.config.listeners[0]
        settings = SessionSettings(self.config, listener, None, {},
                                   Observer(metrics=self.metrics),
                                   upstream_connect=self.upstream.connect, **self._settings)
        self.channel = Channel()
        self.channel.connection_made(self.transport)
        self.session = Session(self.channel, settings, None, "192.0.2.7:40000")
        self._task = asyncio.get_running_loop().create_task(self.session.run())
        await self.settle()
        return self

    async def __aexit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        assert self._task is not None
        if not self._task.done():
            self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)

    @property
    def ended(self) -> bool:
        return self._task is not None and self._task.done()

    async def settle(self) -> None:
        """Run the loop until the session waits for the client (or has ended)."""
        for _ in range(MAX_SETTLE_STEPS):
            await asyncio.sleep(0)  # one loop iteration: no wall-clock wait
            if self.ended or self._waiting_for_client():
                return
        raise AssertionError("the session never came back to read the client")

    def _waiting_for_client(self) -> bool:
        waiter = self.channel._read_waiter
        return waiter is not None and not waiter.done()

    def received(self) -> bytes:
        """What the client was sent since the last call."""
        data = bytes(self.transport.sent[self._received :])
        self._received = len(self.transport.sent)
        return data

    async def send(self, data: bytes) -> None:
        """Client bytes (b"": the client closes its side), then settle."""
        feed(self.channel, data)
        await self.settle()

    async def exchange(self, data: bytes) -> bytes:
        """Send ``data`` and return what the client got back."""
        self.received()
        await self.send(data)
        return self.received()
