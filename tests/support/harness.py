"""An in-memory session harness: a real ``Session`` between a scripted client and a scripted
upstream, with no sockets and no sleeps (in the style of h11's ``ConnectionPair`` and
mitmproxy's playbook tests).

The client side is a ``Channel`` on a ``FakeTransport`` (the server gives real clients a
``SocketChannel``: both are a ``ClientChannel`` to the session); the upstream side is a ``Channel``
made by the session's injectable connector (``SessionSettings.upstream_connect``) and answered
by ``ScriptedUpstream``, which replies to each command line from a table (or a ``respond``
function, e.g. ``demo_responder``).  ``settle`` runs the loop until the session waits for the
client again.  Under ``run`` the loop's clock is virtual (``ClockLoop``): ``advance`` moves it
without waiting, and while the session waits only for a timer (a failure delay, the login
deadline) ``settle`` jumps the clock to that timer, as trio's autojump clock does.

    async with SessionPair(config, ScriptedUpstream({"STAT": b"+OK 0 0\\r\\n"})) as pair:
        assert await pair.exchange(b"USER a\\r\\n") == b"+OK send PASS\\r\\n"
"""

from __future__ import annotations

import asyncio
import ipaddress
import ssl
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from popproxy.metrics import Metrics
from popproxy.policy import Policy
from popproxy.pop3.commands import CommandParser
from popproxy.pop3.events import Command
from popproxy.proxy.channel import Channel
from popproxy.proxy.demo_upstream import DemoUpstream, _DemoConnection
from popproxy.proxy.failure_timing import FailureTiming, UpstreamKey
from popproxy.proxy.observe import Observer
from popproxy.proxy.session import Session
from popproxy.proxy.settings import SessionSettings
from popproxy.proxy.upstream import UpstreamChannel

# Loop iterations ``settle`` allows before it calls the session stuck: every step of a
# scripted exchange takes a handful; a session that never waits for the client is a bug.
MAX_SETTLE_STEPS = 10_000

# One command line (without CRLF) -> the upstream's reply; b"": no reply at all (a stall).
Answer = Callable[[bytes], bytes]


class ClockLoop(asyncio.SelectorEventLoop):
    """An event loop whose clock only moves when told to (``advance``, ``jump_if_idle``)."""

    def __init__(self) -> None:
        super().__init__()
        self._now = 0.0

    def time(self) -> float:
        return self._now

    def advance(self, seconds: float) -> None:
        self._now += seconds

    def jump_if_idle(self) -> bool:
        """Nothing runnable: move the clock to the next timer; False if there is none."""
        if self._ready:  # type: ignore[attr-defined]  # the base loop's run queue
            return False
        due = [h.when() for h in self._scheduled if not h.cancelled()]  # type: ignore[attr-defined]
        if not due:
            return False
        self._now = max(self._now, min(due))
        return True


def run(main: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """``asyncio.run`` on a ``ClockLoop`` (Python 3.11's ``asyncio.run`` takes no loop)."""
    loop = ClockLoop()
    try:
        loop.run_until_complete(main())
    finally:
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()


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
    tests in test_session_timing.py); the harness's default."""

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
    writes: list[bytes] = field(default_factory=list)  # ... and how it wrote them (pipelining)
    connections: list[FakeTransport] = field(default_factory=list)
    # Called once per connection for that connection's answers (instead of ``answers``).
    respond: Callable[[], Answer] | None = None
    # Seconds (loop time) the answer to a verb takes, e.g. a server's failure delay on PASS.
    delays: Mapping[str, float] = field(default_factory=dict)
    # Connections to these ports go to another upstream (routing: ``upstreams`` in a policy).
    routes: Mapping[int, ScriptedUpstream] = field(default_factory=dict)

    def _table(self, line: bytes) -> bytes:
        verb = line.split(b" ", 1)[0].decode("ascii", "replace").upper()
        return self.answers.get(verb, self.default)

    async def connect(self, host: str, port: int) -> UpstreamChannel:
        routed = self.routes.get(port)
        if routed is not None:
            return await routed.connect(host, port)
        channel = Channel()
        pending = bytearray()
        answer = self._table if self.respond is None else self.respond()

        def received(data: bytes) -> None:
            self.writes.append(data)
            pending.extend(data)
            while (end := pending.find(b"\r\n")) >= 0:
                line = bytes(pending[:end])
                del pending[: end + 2]
                self.lines.append(line)
                reply = answer(line)
                delay = self.delays.get(line.split(b" ", 1)[0].decode("ascii", "replace"), 0.0)
                loop = asyncio.get_running_loop()
                if reply and delay:
                    loop.call_later(delay, feed, channel, reply)
                elif reply:
                    loop.call_soon(feed, channel, reply)

        transport = FakeTransport(received)
        self.connections.append(transport)
        channel.connection_made(transport)
        feed(channel, self.greeting)
        return channel

    @property
    def verbs(self) -> list[str]:
        return [line.split(b" ", 1)[0].decode("ascii", "replace") for line in self.lines]


def demo_responder(demo: DemoUpstream) -> Callable[[], Answer]:
    """Answers as ``demo`` would (its users and mailboxes, DELE committed on QUIT), in memory."""

    def connection() -> Answer:
        state = _DemoConnection(demo)

        def answer(line: bytes) -> bytes:
            parser = CommandParser()
            parser.receive_data(line + b"\r\n")
            event = parser.next_event()
            return state.answer(event) if isinstance(event, Command) else b"-ERR bad command\r\n"

        return answer

    return connection


class SessionPair:
    """One ``Session`` (as a task) between an in-memory client and a ``ScriptedUpstream``."""

    def __init__(self, config: Policy, upstream: ScriptedUpstream | None = None,
                 observer: Observer | None = None, client: str = "192.0.2.7",
                 server_tls: ssl.SSLContext | None = None, **settings: Any) -> None:
        """``client``: the client's address (user rules match it); ``server_tls``: makes a
        ``starttls`` listener offer STLS (no handshake happens in memory); ``settings``:
        more ``SessionSettings`` fields (``lockout``, ``failure_timing``, ...)."""
        self.server_tls = server_tls
        self.config = config
        self.upstream = upstream or ScriptedUpstream()
        self.observer = observer or Observer(metrics=Metrics())
        self.metrics = self.observer.metrics
        self.client_ip = ipaddress.ip_address(client)
        self._settings = {"failure_timing": NoFailureFloor(), **settings}
        self.transport = FakeTransport()
        self._received = 0  # octets of transport.sent already returned by ``received``
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> SessionPair:
        listener = self.config.listeners[0]
        loop = asyncio.get_running_loop()
        settings = SessionSettings(self.config, listener, self.server_tls, {}, self.observer,
                                   upstream_connect=self.upstream.connect, clock=loop.time,
                                   **self._settings)
        self.channel = Channel()
        self.channel.connection_made(self.transport)
        self.session = Session(self.channel, settings, self.client_ip, f"{self.client_ip}:40000")
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
        """Run the loop until the session waits for the client (or has ended); on a
        ``ClockLoop``, time jumps to the next timer whenever nothing else can run."""
        loop = asyncio.get_running_loop()
        for _ in range(MAX_SETTLE_STEPS):
            await asyncio.sleep(0)  # one loop iteration: no wall-clock wait
            if self.ended or self._waiting_for_client():
                return
            if isinstance(loop, ClockLoop):
                loop.jump_if_idle()
        raise AssertionError("the session never came back to read the client")

    async def advance(self, seconds: float) -> None:
        """Let ``seconds`` pass on the ``ClockLoop`` (at once), then settle."""
        loop = asyncio.get_running_loop()
        assert isinstance(loop, ClockLoop), "advance needs harness.run"
        loop.advance(seconds)
        # One step for the timers now due: they run after the callbacks already queued, so
        # without it settle could see the session still waiting before its deadline fired.
        await asyncio.sleep(0)
        await self.settle()

    @staticmethod
    def now() -> float:
        """The loop's clock (under ``run``: seconds of virtual time since the start)."""
        return asyncio.get_running_loop().time()

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


def run_greeted(script: Callable[[SessionPair], Awaitable[None]],
                upstream: ScriptedUpstream, config: Policy) -> ScriptedUpstream:
    """Run ``script`` against a session whose greeting the client has read; the upstream."""

    async def main() -> None:
        async with SessionPair(config, upstream) as pair:
            assert pair.received() == b"+OK POP3 proxy ready\r\n"
            await script(pair)

    run(main)
    return upstream
