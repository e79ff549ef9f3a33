"""Hostile or broken input from clients and upstreams: every case gets a defined answer
(-ERR or a clean close) and the proxy keeps serving the next client."""

from __future__ import annotations

import asyncio
import poplib
import random
import socket
import time
from collections.abc import Iterator

import pytest

from popproxy.proxy.demo_upstream import DemoUpstream
from tests.helpers import LoopThread, RunningProxy, make_config, running_proxy
from tests.integration.rawpop import RawPOP3, wait_for

MAX_COMMAND_LINE = 255  # RFC 2449 section 4, including CRLF
MAX_BAD_COMMANDS = 10


def _assert_still_serving(port: int) -> None:
    """A fresh, ordinary client can log in and read its mailbox."""
    client = poplib.POP3("127.0.0.1", port, timeout=10)
    try:
        client.user("demo")
        client.pass_("demo")
        assert client.stat()[0] == 3
        assert client.quit().startswith(b"+OK")
    finally:
        client.close()


# ---------------------------------------------------------------------- client input
def test_64k_garbage_without_newline(demo_upstream: DemoUpstream,
                                     demo_proxy: RunningProxy) -> None:
    garbage = random.Random(64).randbytes(64 * 1024).replace(b"\n", b"x")
    with RawPOP3(demo_proxy.port) as c:
        c.send(garbage)
        assert c.read_line() == b"-ERR [SYS/PERM] line too long\r\n"  # exactly one answer
        c.send(garbage)  # still the same over-long line: drained, not answered again
        c.send(b"\r\nCAPA\r\n")  # the line ends; the next one is a command again
        reply = c.read_response(multiline=True)
        assert reply.startswith(b"+OK") and b"\r\nUSER\r\n" in reply
        c.login("demo", "demo")
    # no garbage forwarded (a CAPA first: the proxy asks whether the upstream pipelines)
    assert demo_upstream.commands_seen[:3] == [b"CAPA", b"USER", b"PASS"]

    _assert_still_serving(demo_proxy.port)


def test_64k_garbage_then_disconnect(demo_proxy: RunningProxy) -> None:
    with RawPOP3(demo_proxy.port) as c:
        c.send(bytes(range(256)).replace(b"\n", b"") * 257)
        c.sock.shutdown(socket.SHUT_WR)
        assert c.read_until_eof() == b"-ERR [SYS/PERM] line too long\r\n"
    wait_for(lambda: demo_proxy.server.session_count == 0, what="the session to end")
    _assert_still_serving(demo_proxy.port)


@pytest.mark.parametrize(
    "line",
    [
        b"\0\0\0\0",
        b"US\0R demo",
        b"USER demo\0",
        b"\xff\xfe\xfd\xfc",  # invalid UTF-8 as the keyword
        b"\xc3\x28 demo",
        b"",  # empty line
        b"US",  # keyword too short
        b"USERS demo",  # keyword too long
        b"USER  demo",  # doubled space
        b"USER demo\rPASS demo",  # bare CR inside a line
        b"N" * (MAX_COMMAND_LINE - 1),  # 254 octets + CRLF = 256
        b"USER " + b"u" * (MAX_COMMAND_LINE - 6),
    ],
    ids=["nul-only", "nul-in-verb", "nul-in-arg", "bad-utf8-verb", "bad-utf8-prefix", "empty",
         "short-verb", "long-verb", "double-space", "bare-cr", "256-octets", "256-octets-user"],
)
def test_malformed_line_gets_err_and_session_survives(
    demo_upstream: DemoUpstream, demo_proxy: RunningProxy, line: bytes
) -> None:
    with RawPOP3(demo_proxy.port) as c:
        assert c.command(line, multiline=False).startswith(b"-ERR [SYS/PERM]")
        c.login("demo", "demo")
        assert c.command(line, multiline=False).startswith(b"-ERR")  # also after login
        assert c.command("STAT").startswith(b"+OK 3 ")
    assert demo_upstream.commands_seen == [b"CAPA", b"USER", b"PASS", b"STAT"]
    _assert_still_serving(demo_proxy.port)


def test_255_octet_line_is_accepted(demo_upstream: DemoUpstream,
                                    demo_proxy: RunningProxy) -> None:
    name = b"u" * (MAX_COMMAND_LINE - 7)  # "USER " + name + CRLF = 255 octets
    with RawPOP3(demo_proxy.port) as c:
        assert c.command(b"USER " + name).startswith(b"+OK")
        # Relayed as is: the demo upstream does not know this user.
        assert c.command("PASS demo").startswith(b"-ERR [AUTH]")
    assert demo_upstream.commands_seen == [b"CAPA", b"USER", b"PASS"]


def test_invalid_utf8_credentials(demo_upstream: DemoUpstream, demo_proxy: RunningProxy) -> None:
    with RawPOP3(demo_proxy.port) as c:
        assert c.command(b"USER \xff\xfe\xc3\x28").startswith(b"+OK")
        assert c.command(b"PASS \x80\x81 \xff").startswith(b"-ERR")
        c.login("demo", "demo")


def test_too_many_bad_commands_closes(demo_upstream: DemoUpstream,
                                      demo_proxy: RunningProxy) -> None:
    with RawPOP3(demo_proxy.port) as c:
        for _ in range(MAX_BAD_COMMANDS - 1):
            assert c.command(b"\0").startswith(b"-ERR")
        assert c.command("CAPA").startswith(b"+OK")  # a valid command resets the count

        c.send(b"\0\r\n" * (MAX_BAD_COMMANDS + 5))  # pipelined burst
        replies = c.read_until_eof().split(b"\r\n")
    assert replies[-1] == b""
    assert len(replies) == MAX_BAD_COMMANDS + 2  # ten answers, the closing line, ""
    assert all(r.startswith(b"-ERR [SYS/PERM]") for r in replies[:-1])
    assert b"too many" in replies[-2]
    assert demo_upstream.commands_seen == []
    _assert_still_serving(demo_proxy.port)


def test_too_many_bad_commands_after_login_sends_no_quit(demo_upstream: DemoUpstream,
                                                         demo_proxy: RunningProxy) -> None:
    with RawPOP3(demo_proxy.port) as c:
        c.login("demo", "demo")
        assert c.command("DELE 1").startswith(b"+OK")
        c.send(b"\xff\r\n" * MAX_BAD_COMMANDS)
        assert c.read_until_eof().count(b"-ERR") == MAX_BAD_COMMANDS + 1
    wait_for(lambda: demo_proxy.server.session_count == 0, what="the session to end")
    # The upstream has read to its EOF: nothing the proxy sent is still on the way.
    wait_for(lambda: demo_upstream.open_connections == 0, what="the upstream to see the close")
    assert demo_upstream.commands_seen == [b"CAPA", b"USER", b"PASS", b"DELE"]
    _assert_still_serving(demo_proxy.port)  # message 1 was not deleted


# ---------------------------------------------------------------------- broken upstreams
def _unused_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _upstream(port: int, **settings: float) -> dict[str, object]:
    return {"host": "127.0.0.1", "port": port, "connect_timeout": 2, "greeting_timeout": 2,
            "response_timeout": 2, **settings}


def _login_gets_sys_temp(proxy_port: int) -> float:
    """USER/PASS through the proxy: -ERR [SYS/TEMP], then a clean close.  Returns seconds."""
    with RawPOP3(proxy_port) as c:
        assert c.greeting.startswith(b"+OK")  # the proxy greets on its own
        assert c.command("USER demo").startswith(b"+OK")
        start = time.monotonic()
        reply = c.command("PASS demo")
        elapsed = time.monotonic() - start
        assert reply.startswith(b"-ERR [SYS/TEMP]"), reply
        assert c.read_until_eof() == b""
    return elapsed


def test_upstream_unreachable(loop_thread: LoopThread) -> None:
    config = make_config(1, upstream=_upstream(_unused_port()))
    with running_proxy(config, loop_thread) as proxy:
        assert _login_gets_sys_temp(proxy.port) < 2
        assert _login_gets_sys_temp(proxy.port) < 2  # and again: the proxy is still there
        wait_for(lambda: proxy.server.session_count == 0, what="sessions to end")


@pytest.fixture
def silent_upstream() -> Iterator[int]:
    """A port that accepts TCP connections (kernel backlog) but never says anything."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(16)
        yield int(s.getsockname()[1])


def test_upstream_never_greets(loop_thread: LoopThread, silent_upstream: int) -> None:
    config = make_config(1, upstream=_upstream(silent_upstream, greeting_timeout=0.5))
    with running_proxy(config, loop_thread) as proxy:
        elapsed = _login_gets_sys_temp(proxy.port)
    assert 0.4 < elapsed < 3


class _ScriptedUpstream:
    """An upstream that sends fixed bytes: ``greeting``, then ``answers[i]`` per line read."""

    def __init__(self, greeting: bytes, answers: list[bytes], close_after: bool = True) -> None:
        self.greeting = greeting
        self.answers = answers
        self.close_after = close_after
        self.received: list[bytes] = []
        self.server: asyncio.Server | None = None

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(self.greeting)
        for answer in self.answers:
            line = await reader.readline()
            while line.strip().upper() == b"CAPA":  # an RFC 1939 server: no CAPA (RFC 2449)
                writer.write(b"-ERR unknown command\r\n")
                line = await reader.readline()
            if not line:
                break
            self.received.append(line.split(b" ")[0].strip())

            writer.write(answer)
            await writer.drain()
        if self.close_after:
            writer.close()
        else:
            await reader.read()


@pytest.mark.parametrize(
    ("greeting", "answers", "login_ok"),
    [
        (b"-ERR [SYS/TEMP] not today\r\n", [], False),
        (b"+OK hi\r\n", [b"+OK\r\n"], False),  # closes after USER
        (b"+OK hi\r\n", [b"+OK\r\n", b"+OK\r\n"], True),  # closes after the login
        (b"+OK hi\r\n", [b"+OK\r\n", b"+OK\r\nbogus line\r\n"], True),  # junk, closes
        (b"\xff" * 600 + b"\r\n", [], False),  # an over-long, binary greeting
        (b"+OK hi\r\n", [b"+OK " + b"x" * 600 + b"\r\n"], False),  # over-long status line
    ],
    ids=["err-greeting", "closes-after-user", "closes-after-pass", "junk-after-pass",
         "long-binary-greeting", "long-status-line"],
)
def test_broken_upstream_login(loop_thread: LoopThread, greeting: bytes,
                               answers: list[bytes], login_ok: bool) -> None:
    upstream = _ScriptedUpstream(greeting, answers)
    port = loop_thread.call(upstream.start())
    try:
        with running_proxy(make_config(1, upstream=_upstream(port)), loop_thread) as proxy:
            with RawPOP3(proxy.port) as c:
                assert c.command("USER demo").startswith(b"+OK")
                first = c.command("PASS demo")
                if login_ok:  # the upstream broke after the login: the next command fails
                    assert first.startswith(b"+OK"), first
                    first = c.command("STAT")
                rest = c.read_until_eof()
            assert first.startswith(b"-ERR [SYS/TEMP]"), first
            assert rest == b""
    finally:
        loop_thread.call(upstream.stop())


def test_upstream_dies_mid_retr_never_completes_the_message(loop_thread: LoopThread) -> None:
    partial = b"+OK 100000 octets\r\nSubject: cut\r\n\r\n" + b"line\r\n" * 1000
    upstream = _ScriptedUpstream(b"+OK\r\n", [b"+OK\r\n", b"+OK\r\n", partial])
    port = loop_thread.call(upstream.start())
    try:
        config = make_config(1, upstream=_upstream(port))
        with running_proxy(config, loop_thread) as proxy, RawPOP3(proxy.port) as c:
            c.login("demo", "demo")
            c.send(b"RETR 1\r\n")
            data = c.read_until_eof()
        assert data.startswith(b"+OK 100000 octets\r\n")
        # The client must not see a terminator: a cut message may not look complete.
        assert b"\r\n.\r\n" not in data
        assert data.endswith(b"-ERR [SYS/TEMP] upstream server unavailable, try again later\r\n")
        assert upstream.received == [b"USER", b"PASS", b"RETR"]
    finally:
        loop_thread.call(upstream.stop())


# ---------------------------------------------------------------------- session caps
def test_session_cap_per_ip(demo_upstream: DemoUpstream, loop_thread: LoopThread) -> None:
    config = make_config(demo_upstream.port, limits={"max_sessions_per_ip": 2})
    with running_proxy(config, loop_thread) as proxy, RawPOP3(proxy.port) as first, \
            RawPOP3(proxy.port) as second:
        assert first.greeting.startswith(b"+OK") and second.greeting.startswith(b"+OK")
        with RawPOP3(proxy.port, read_greeting=False) as third:
            assert third.read_until_eof() == (
                b"-ERR [SYS/TEMP] too many connections, try again later\r\n"
            )
        first.login("demo", "demo")  # the admitted sessions are unaffected
        assert first.command("STAT").startswith(b"+OK 3 ")
        first.close()
        wait_for(lambda: proxy.server.session_count == 1, what="a slot to free up")
        with RawPOP3(proxy.port) as fourth:
            assert fourth.greeting.startswith(b"+OK")
            fourth.login("demo", "demo")


def test_total_session_cap(demo_upstream: DemoUpstream, loop_thread: LoopThread) -> None:
    config = make_config(demo_upstream.port, limits={"max_sessions": 1})
    with running_proxy(config, loop_thread) as proxy, RawPOP3(proxy.port) as first:
        with RawPOP3(proxy.port, read_greeting=False) as second:
            assert second.read_until_eof().startswith(b"-ERR [SYS/TEMP]")
        first.login("demo", "demo")


def test_unknown_verbs_count_as_bad_commands(demo_upstream: DemoUpstream,
                                             demo_proxy: RunningProxy) -> None:
    """Well-formed nonsense (XXXX, NOOP before login) is no free pass for a prober."""
    with RawPOP3(demo_proxy.port) as c:
        c.send(b"XXXX\r\n" * MAX_BAD_COMMANDS)
        replies = c.read_until_eof().split(b"\r\n")
    assert len(replies) == MAX_BAD_COMMANDS + 2
    assert b"too many" in replies[-2]
    assert demo_upstream.commands_seen == []
