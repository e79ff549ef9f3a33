"""A session harness: a real ``Session`` between a scripted client and a scripted upstream, on
real sockets but with no sleeps (in the style of h11's ``ConnectionPair`` and mitmproxy's
playbook tests).

Both sides are the production channel, ``SocketChannel``, on one end of a ``socket.socketpair``:
the client's (as ``acceptor`` makes it), and the upstream's, made by the session's injectable
connector (``SessionSettings.upstream_connect``) where ``upstream_socket.open_channel`` would
connect.  The harness holds the other ends: the client end's received bytes are collected at
every step (``received``), and ``ScriptedUpstream`` answers each command line on its end from a
table (or a ``respond`` function, e.g. ``demo_responder``).  Unix socket pairs, not TCP: a
byte sent is readable at the other end when ``send`` returns, so "nothing is runnable" can be
asked of the selector without waiting.  ``settle`` runs the loop until the session waits for
the client again, every client byte read and every reply handed to the socket.  Under ``run``
the loop's clock is virtual (``ClockLoop``): ``advance`` moves it without waiting, and while
the session waits only for a timer (a failure delay, the login deadline) ``settle`` jumps the
clock to that timer, as trio's autojump clock does.

    async with SessionPair(config, ScriptedUpstream({"STAT": b"+OK 0 0\\r\\n"})) as pair:
        assert await pair.exchange(b"USER a\\r\\n") == b"+OK send PASS\\r\\n"
"""

from __future__ import annotations

import asyncio
import ipaddress
import select
import socket
import ssl
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from popproxy.metrics import Metrics
from popproxy.policy import Policy
from popproxy.pop3.commands import CommandParser
from popproxy.pop3.events import Command
from popproxy.proxy.demo_upstream import DemoUpstream, _DemoConnection
from popproxy.proxy.failure_timing import FailureTiming, UpstreamKey
from popproxy.proxy.observe import Observer
from popproxy.proxy.session import Session
from popproxy.proxy.settings import SessionSettings
from popproxy.proxy.socket_channel import SocketChannel
from popproxy.proxy.upstream import UpstreamChannel

# Loop iterations ``settle`` allows before it calls the session stuck: every step of a
# scripted exchange takes a handful; a session that never waits for the client is a bug.
MAX_SETTLE_STEPS = 10_000
# Bytes taken from the harness's end of a socket per recv.
RECV_SIZE = 256 * 1024

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
        """Nothing runnable, no descriptor ready: move the clock to the next timer; False if
        there is none.  (A reply in a socket is work: the selector is asked, without waiting
        and without consuming anything, level-triggered.)"""
        if self._ready or self._selector.select(0):  # type: ignore[attr-defined]
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


def socket_pair() -> tuple[socket.socket, socket.socket]:
    """(the proxy's end, the harness's end): connected, both non-blocking."""
    proxy_end, other_end = socket.socketpair()
    proxy_end.setblocking(False)
    other_end.setblocking(False)
    return proxy_end, other_end


def readable(fd: int) -> bool:
    """Input (or EOF) waits on ``fd``; asked without waiting (poll: any descriptor number)."""
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    return bool(poller.poll(0))


class NoFailureFloor(FailureTiming):
    """Learns no refusal times, so a refused login is answered at once (the floor has its own
    tests in test_session_timing.py); the harness's default."""

    def observe(self, key: UpstreamKey, seconds: float) -> None:
        pass


class ScriptedConnection:
    """The upstream's end of one connection: reads what the proxy sends, answers each line."""

    def __init__(self, upstream: ScriptedUpstream, answer: Answer) -> None:
        proxy_end, sock = socket_pair()
        self._sock: socket.socket | None = sock  # the harness's end; None once closed
        self.channel = SocketChannel(proxy_end)  # what the session gets
        self._upstream, self._answer = upstream, answer
        self._pending, self._out = bytearray(), bytearray()
        self._loop = asyncio.get_running_loop()
        self._writing = False
        self._closed_by_proxy: bool | None = None  # decided at release, if it came to that
        self._loop.add_reader(sock.fileno(), self._readable)

    @property
    def closed(self) -> bool:
        """The proxy closed (or aborted) its end, before the harness released it."""
        if self._closed_by_proxy is not None:
            return self._closed_by_proxy
        return self.channel.is_closing()

    def send(self, data: bytes) -> None:
        """Queue ``data`` for the proxy; what the socket does not take goes when writable."""
        if self._sock is None:
            return
        self._out += data
        self._flush()

    def _flush(self) -> None:
        assert self._sock is not None
        try:
            del self._out[: self._sock.send(self._out)]
        except BlockingIOError:
            pass
        except OSError:  # the proxy reset the connection
            self._close()
            return
        if self._out and not self._writing:
            self._writing = True
            self._loop.add_writer(self._sock.fileno(), self._flush)
        elif not self._out and self._writing:
            self._writing = False
            self._loop.remove_writer(self._sock.fileno())

    def _readable(self) -> None:
        assert self._sock is not None
        try:
            data = self._sock.recv(RECV_SIZE)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._close()
            return
        self._upstream.writes.append(data)
        self._pending += data
        while (end := self._pending.find(b"\r\n")) >= 0:
            line = bytes(self._pending[:end])
            del self._pending[: end + 2]
            self._reply(line)

    def _reply(self, line: bytes) -> None:
        upstream = self._upstream
        upstream.lines.append(line)
        reply = self._answer(line)
        delay = upstream.delays.get(line.split(b" ", 1)[0].decode("ascii", "replace"), 0.0)
        if reply and delay:
            self._loop.call_later(delay, self.send, reply)
        elif reply:
            self.send(reply)

    def _close(self) -> None:
        sock, self._sock = self._sock, None
        if sock is None:
            return
        self._loop.remove_reader(sock.fileno())
        if self._writing:
            self._loop.remove_writer(sock.fileno())
        sock.close()

    def release(self) -> None:
        """The harness is done with it: note whether the proxy had closed it, then close."""
        if self._closed_by_proxy is None:
            self._closed_by_proxy = self.channel.is_closing()
        self.channel.abort()
        self._close()


@dataclass
class ScriptedUpstream:
    """Answers each command line by its verb (``default`` for the rest); greets first."""

    answers: Mapping[str, bytes] = field(default_factory=dict)
    default: bytes = b"+OK\r\n"
    greeting: bytes = b"+OK scripted upstream\r\n"
    lines: list[bytes] = field(default_factory=list)  # every line the proxy sent
    writes: list[bytes] = field(default_factory=list)  # ... as its reads got them (pipelining)
    connections: list[ScriptedConnection] = field(default_factory=list)
    # Called once per connection for that connection's answers (instead of ``answers``).
    respond: Callable[[], Answer] | None = None
    # Seconds (loop time) the answer to a verb takes, e.g. a server's failure delay on PASS.
    delays: Mapping[str, float] = field(default_factory=dict)
    # Connections to these ports go to another upstream (routing: ``upstreams`` in a policy).
    routes: Mapping[int, ScriptedUpstream] = field(default_factory=dict)

    def _table(self, line: bytes) -> bytes:
        verb = line.split(b" ", 1)[0].decode("ascii", "replace").upper()
        return self.answers.get(verb, self.default)

    def open(self, host: str, port: int) -> ScriptedConnection:
        """A new connection (routed by port), greeted; the session reads its ``channel``."""
        routed = self.routes.get(port)
        if routed is not None:
            return routed.open(host, port)
        answer = self._table if self.respond is None else self.respond()
        connection = ScriptedConnection(self, answer)
        self.connections.append(connection)
        connection.send(self.greeting)
        return connection

    async def connect(self, host: str, port: int) -> UpstreamChannel:
        """A connector (``SessionSettings.upstream_connect``)."""
        return self.open(host, port).channel

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
    """One ``Session`` (as a task) between a scripted client and a ``ScriptedUpstream``."""

    def __init__(self, config: Policy, upstream: ScriptedUpstream | None = None,
                 observer: Observer | None = None, client: str = "192.0.2.7",
                 server_tls: ssl.SSLContext | None = None, **settings: Any) -> None:
        """``client``: the client's address (user rules match it); ``server_tls``: makes a
        ``starttls`` listener offer STLS (the scripted client never completes a handshake);
        ``settings``: more ``SessionSettings`` fields (``lockout``, ``failure_timing``, ...)."""
        self.server_tls = server_tls
        self.config = config
        self.upstream = upstream or ScriptedUpstream()
        self.observer = observer or Observer(metrics=Metrics())
        self.metrics = self.observer.metrics
        self.client_ip = ipaddress.ip_address(client)
        self._settings = {"failure_timing": NoFailureFloor(), **settings}
        self.sent = bytearray()  # everything the client end has received
        self._received = 0  # octets of ``sent`` already returned by ``received``
        self._to_send = bytearray()  # client bytes its socket has not taken yet
        self._shut = False  # the client closes its side once _to_send is empty
        self._client_eof = False
        self._closed: bool | None = None  # decided at exit: had the proxy closed the client?
        self._upstreams: list[ScriptedConnection] = []
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> SessionPair:
        listener = self.config.listeners[0]
        loop = asyncio.get_running_loop()
        settings = SessionSettings(self.config, listener, self.server_tls, {}, self.observer,
                                   upstream_connect=self._connect, clock=loop.time,
                                   **self._settings)
        proxy_end, self._client = socket_pair()
        self.channel = SocketChannel(proxy_end)
        self.session = Session(self.channel, settings, self.client_ip, f"{self.client_ip}:40000")
        self._task = loop.create_task(self.session.run())
        await self.settle()
        return self

    async def __aexit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        assert self._task is not None
        if not self._task.done():
            self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        if self._closed is None:
            self._closed = self.channel.is_closing()
        self.channel.abort()
        self._client.close()
        for connection in self._upstreams:
            connection.release()

    async def _connect(self, host: str, port: int) -> UpstreamChannel:
        connection = self.upstream.open(host, port)
        self._upstreams.append(connection)  # released (closed) with this pair
        return connection.channel

    @property
    def ended(self) -> bool:
        return self._task is not None and self._task.done()

    @property
    def closed(self) -> bool:
        """The proxy closed (or aborted) the client connection."""
        return self.channel.is_closing() if self._closed is None else self._closed

    async def settle(self) -> None:
        """Run the loop until the session waits for the client (or has ended); on a
        ``ClockLoop``, time jumps to the next timer whenever nothing else can run."""
        loop = asyncio.get_running_loop()
        for _ in range(MAX_SETTLE_STEPS):
            await asyncio.sleep(0)  # one loop iteration: no wall-clock wait
            self._push()
            self._collect()
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
        """A read waits, nothing the client sent is left unread (in the harness, the socket
        or the channel) and every reply has been handed to the socket."""
        channel = self.channel
        waiter = channel._read_waiter
        if waiter is None or waiter.done() or self._to_send or self._shut:
            return False
        if channel._out or channel._flush_scheduled:
            return False
        return not (channel._reading and readable(channel._fd))

    def _push(self) -> None:
        """Hand the client's bytes to its socket, as many as it takes; then its FIN."""
        if self._to_send:
            try:
                del self._to_send[: self._client.send(self._to_send)]
            except BlockingIOError:
                return
        if self._shut and not self._to_send:
            self._shut = False
            self._client.shutdown(socket.SHUT_WR)

    def _collect(self) -> None:
        """Take what the client end has received (it reads everything, at once)."""
        while not self._client_eof:
            try:
                data = self._client.recv(RECV_SIZE)
            except BlockingIOError:
                return
            except OSError:  # reset: nothing more will come
                data = b""
            if not data:
                self._client_eof = True
                return
            self.sent += data

    def received(self) -> bytes:
        """What the client was sent since the last call."""
        self._collect()
        data = bytes(self.sent[self._received :])
        self._received = len(self.sent)
        return data

    def feed(self, data: bytes) -> None:
        """Client bytes (b"": the client closes its side) into its socket, without a loop
        step: what the next ``send`` adds is in the socket with them."""
        if data:
            self._to_send += data
        else:
            self._shut = True
        self._push()

    def reset(self) -> None:
        """The connection is reset under the session: what a failed read does to the channel
        (a Unix socket pair has no RST to send)."""
        self.channel._fail(ConnectionResetError())

    async def send(self, data: bytes) -> None:
        """Client bytes (b"": the client closes its side), then settle."""
        self.feed(data)
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
