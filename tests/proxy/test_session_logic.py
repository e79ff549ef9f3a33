"""Session logic on the session harness (tests/support/harness.py): socket pairs, no sleeps.

Moved from test_session.py, where they ran against a listening proxy and the demo upstream.
``ScriptedUpstream.verbs`` records what reached the upstream, so these tests also check what
the proxy does NOT forward (APOP, bad arguments, QUIT on a dropped connection).  SASL is in
test_session_sasl.py.
"""

from __future__ import annotations

import base64
from collections.abc import Awaitable, Callable

import pytest

from popproxy.proxy.demo_upstream import SAMPLE_MESSAGES, DemoUpstream
from popproxy.proxy.upstream_caps import UpstreamCapabilities
from tests.helpers import make_config
from tests.support.harness import (
    ScriptedUpstream,
    SessionPair,
    demo_responder,
    run,
    run_greeted,
)

STAT = b"+OK 2 300\r\n"
UPSTREAM = {"PASS": b"+OK logged in\r\n", "STAT": STAT, "CAPA": b"-ERR no CAPA\r\n"}


def _run(script: Callable[[SessionPair], Awaitable[None]],
         upstream: ScriptedUpstream | None = None) -> ScriptedUpstream:
    return run_greeted(script, upstream or ScriptedUpstream(UPSTREAM), make_config(110))


async def _login(pair: SessionPair) -> None:
    assert await pair.exchange(b"USER demo\r\n") == b"+OK send PASS\r\n"
    assert await pair.exchange(b"PASS demo\r\n") == b"+OK logged in\r\n"


def _login_verbs(upstream: ScriptedUpstream) -> list[str]:
    """What reached the upstream, without the CAPA the proxy sends to learn PIPELINING."""
    return [v for v in upstream.verbs if v != "CAPA"]


def test_apop_refused_and_not_forwarded() -> None:
    async def script(pair: SessionPair) -> None:
        reply = await pair.exchange(b"APOP demo c4c9334bac560ecc979e58001b3e22fb\r\n")
        assert reply.startswith(b"-ERR")
        await _login(pair)  # the session is still usable

    upstream = _run(script)
    assert "APOP" not in upstream.verbs


def test_pass_without_user() -> None:
    async def script(pair: SessionPair) -> None:
        assert (await pair.exchange(b"PASS demo\r\n")).startswith(b"-ERR")
        assert (await pair.exchange(b"STAT\r\n")).startswith(b"-ERR")  # not logged in
        await _login(pair)
        assert await pair.exchange(b"STAT\r\n") == STAT

    assert _login_verbs(_run(script)) == ["USER", "PASS", "STAT"]


def test_pass_after_failed_pass_needs_user_again() -> None:
    async def script(pair: SessionPair) -> None:
        assert (await pair.exchange(b"USER demo\r\n")).startswith(b"+OK")
        assert (await pair.exchange(b"PASS wrong\r\n")).startswith(b"-ERR [AUTH]")
        # RFC 1939: back to AUTHORIZATION, so PASS needs a USER again
        assert (await pair.exchange(b"PASS demo\r\n")).startswith(b"-ERR")

    refusing = ScriptedUpstream({**UPSTREAM, "PASS": b"-ERR wrong password\r\n"})
    assert _login_verbs(_run(script, refusing)) == ["USER", "PASS"]


def test_transaction_commands_refused_before_login() -> None:
    async def script(pair: SessionPair) -> None:
        for cmd in (b"STAT", b"LIST", b"RETR 1", b"DELE 1", b"UIDL", b"TOP 1 1", b"NOOP",
                    b"RSET"):
            assert (await pair.exchange(cmd + b"\r\n")).startswith(b"-ERR"), cmd
        assert (await pair.exchange(b"QUIT\r\n")).startswith(b"+OK")
        assert pair.ended and pair.closed

    assert _run(script).verbs == []


def test_bad_arguments_in_transaction_not_forwarded() -> None:
    async def script(pair: SessionPair) -> None:
        await _login(pair)
        for cmd in (b"RETR", b"RETR x", b"RETR 1 2", b"TOP 1", b"DELE -1", b"STAT 1",
                    b"LIST 12345678901", b"USER demo", b"APOP a b", b"AUTH PLAIN"):
            assert (await pair.exchange(cmd + b"\r\n")).startswith(b"-ERR"), cmd
        assert await pair.exchange(b"STAT\r\n") == STAT

    assert _login_verbs(_run(script)) == ["USER", "PASS", "STAT"]


def test_pipelined_commands_are_answered_in_order() -> None:
    async def script(pair: SessionPair) -> None:
        await _login(pair)
        assert await pair.exchange(b"STAT\r\nNOOP\r\nSTAT\r\n") == STAT + b"+OK\r\n" + STAT

    assert _login_verbs(_run(script))[2:] == ["STAT", "NOOP", "STAT"]


# --------------------------------------------------------------- against the demo's answers
DEMO_STAT = b"+OK %d %d\r\n" % (len(SAMPLE_MESSAGES), sum(map(len, SAMPLE_MESSAGES)))


def _demo(script: Callable[[SessionPair], Awaitable[None]], demo: DemoUpstream | None = None,
          **limits: float) -> ScriptedUpstream:
    """Run ``script`` against a session whose upstream answers as the demo upstream does."""
    upstream = ScriptedUpstream(respond=demo_responder(demo or DemoUpstream()))

    async def main() -> None:
        async with SessionPair(make_config(110, limits=limits), upstream) as pair:
            assert pair.received() == b"+OK POP3 proxy ready\r\n"
            await script(pair)

    run(main)
    return upstream


def _capa(reply: bytes) -> list[bytes]:
    lines = reply.split(b"\r\n")
    assert lines[0].startswith(b"+OK")
    assert lines[-2:] == [b".", b""]
    return lines[1:-2]


async def _demo_login(pair: SessionPair) -> None:
    assert await pair.exchange(b"USER demo\r\n") == b"+OK send PASS\r\n"
    assert await pair.exchange(b"PASS demo\r\n") == b"+OK logged in\r\n"


def test_greeting_does_not_leak_upstream_banner() -> None:
    async def script(pair: SessionPair) -> None:
        await _demo_login(pair)  # the upstream is only contacted now
        assert await pair.exchange(b"NOOP\r\n") == b"+OK\r\n"

    upstream = _demo(script)  # _demo checked the greeting is the proxy's own, byte for byte
    assert _login_verbs(upstream)[:2] == ["USER", "PASS"]


def test_capa_before_login() -> None:
    caps: list[bytes] = []

    async def script(pair: SessionPair) -> None:
        caps.extend(_capa(await pair.exchange(b"CAPA\r\n")))

    upstream = _demo(script)
    assert b"USER" in caps
    assert b"SASL PLAIN LOGIN" in caps
    assert {b"TOP", b"UIDL", b"PIPELINING", b"RESP-CODES"} <= set(caps)
    assert not [c for c in caps if c.startswith((b"IMPLEMENTATION", b"STLS"))]
    assert upstream.verbs == []  # answered by the proxy itself


def test_capa_after_login_hides_login_and_implementation() -> None:
    async def script(pair: SessionPair) -> None:
        await _demo_login(pair)
        # The demo upstream says TOP, UIDL, USER, IMPLEMENTATION demo.
        assert _capa(await pair.exchange(b"CAPA\r\n")) == [b"TOP", b"UIDL"]

    assert _demo(script).verbs[-1] == "CAPA"


def test_user_pass_login_and_relay() -> None:
    async def script(pair: SessionPair) -> None:
        assert (await pair.exchange(b"USER demo\r\n")).startswith(b"+OK")
        # the upstream's own answer
        assert await pair.exchange(b"PASS demo\r\n") == b"+OK logged in\r\n"
        assert await pair.exchange(b"STAT\r\n") == DEMO_STAT
        assert (await pair.exchange(b"RETR 2\r\n")).endswith(
            b"\r\n..a line starting with a dot\r\n...two dots\r\n..\r\nend\r\n.\r\n")
        assert (await pair.exchange(b"QUIT\r\n")).startswith(b"+OK")
        assert pair.ended and pair.closed

    _demo(script)


def test_wrong_password_relays_auth_code() -> None:
    async def script(pair: SessionPair) -> None:
        assert (await pair.exchange(b"USER demo\r\n")).startswith(b"+OK")
        assert await pair.exchange(b"PASS nope\r\n") == b"-ERR [AUTH] authentication failed\r\n"
        await _demo_login(pair)

    _demo(script)


@pytest.mark.parametrize("max_failures", [1, 3])
def test_max_login_failures_closes_connection(max_failures: int) -> None:
    async def script(pair: SessionPair) -> None:
        for _ in range(max_failures - 1):
            assert (await pair.exchange(b"USER demo\r\n")).startswith(b"+OK")
            assert (await pair.exchange(b"PASS wrong\r\n")).startswith(b"-ERR [AUTH]")
        # The last failure may come through any login path: here AUTH PLAIN.
        plain = base64.b64encode(b"\0demo\0wrong")
        reply = await pair.exchange(b"AUTH PLAIN " + plain + b"\r\n")
        assert reply.startswith(b"-ERR [AUTH]") and reply.count(b"\r\n") == 2
        assert pair.ended and pair.closed

    _demo(script, max_login_failures=max_failures)


@pytest.mark.parametrize("how", ["fin", "rst"])
def test_client_disconnect_sends_no_quit_upstream(how: str) -> None:
    demo = DemoUpstream()

    async def script(pair: SessionPair) -> None:
        await _demo_login(pair)
        assert (await pair.exchange(b"DELE 1\r\n")).startswith(b"+OK")
        assert (await pair.exchange(b"RETR 3\r\n")).startswith(b"+OK")
        if how == "rst":
            pair.reset()
            await pair.settle()
        else:
            await pair.send(b"")
        assert pair.ended

    upstream = _demo(script, demo)
    assert upstream.verbs == ["CAPA", "USER", "PASS", "DELE", "RETR"]
    assert upstream.connections[-1].closed
    assert demo.users[b"demo"].messages == list(SAMPLE_MESSAGES)  # and so nothing was deleted


def test_half_close_after_pipelined_commands_gets_every_answer() -> None:
    async def script(pair: SessionPair) -> None:
        await pair.send(b"USER demo\r\nPASS demo\r\nSTAT\r\nQUIT\r\n")
        await pair.send(b"")
        assert pair.received() == (b"+OK send PASS\r\n+OK logged in\r\n" + DEMO_STAT
                                   + b"+OK bye\r\n")
        assert pair.ended

    assert _demo(script).verbs == ["CAPA", "USER", "PASS", "STAT", "QUIT"]


def test_quit_is_relayed_and_commits() -> None:
    demo = DemoUpstream()

    async def script(pair: SessionPair) -> None:
        await _demo_login(pair)
        assert (await pair.exchange(b"DELE 1\r\n")).startswith(b"+OK")
        assert await pair.exchange(b"QUIT\r\n") == b"+OK bye\r\n"
        assert pair.ended and pair.closed

    assert _demo(script, demo).verbs[-1] == "QUIT"
    assert demo.users[b"demo"].messages == list(SAMPLE_MESSAGES[1:])


def test_quit_before_login_never_contacts_upstream() -> None:
    async def script(pair: SessionPair) -> None:
        assert (await pair.exchange(b"USER demo\r\n")).startswith(b"+OK")
        assert (await pair.exchange(b"QUIT\r\n")).startswith(b"+OK")
        assert pair.ended and pair.closed

    assert _demo(script).verbs == []


# --------------------------------------------------------------- upstream PIPELINING
def _login_batches(upstream: ScriptedUpstream) -> list[list[str]]:
    """The verbs of each write that carried USER or PASS."""
    batches = [[line.split(b" ", 1)[0].decode() for line in write.split(b"\r\n")[:-1]]
               for write in upstream.writes]
    return [b for b in batches if "USER" in b or "PASS" in b]


@pytest.mark.parametrize("pipelining", [True, False])
def test_user_and_pass_pipelined_only_when_listed(pipelining: bool) -> None:
    """USER and PASS in one write only where the upstream lists PIPELINING (RFC 2449 s6.6)."""
    upstream = ScriptedUpstream(respond=demo_responder(DemoUpstream(pipelining=pipelining)))
    caps = UpstreamCapabilities()  # shared by the sessions, as the server's is

    async def main() -> None:
        for _ in range(2):
            async with SessionPair(make_config(110), upstream, upstream_caps=caps) as pair:
                await _demo_login(pair)
                assert (await pair.exchange(b"STAT\r\n")).startswith(b"+OK 3 ")

    run(main)
    expected = [["USER", "PASS"]] * 2 if pipelining else [["USER"], ["PASS"]] * 2
    assert _login_batches(upstream) == expected
    assert upstream.verbs.count("CAPA") == 1  # learned once, then remembered


@pytest.mark.parametrize("user, password", [(b"demo", b"wrong"), (b"nobody", b"demo")])
def test_pipelined_login_failure_is_a_normal_auth_failure(user: bytes, password: bytes) -> None:
    async def script(pair: SessionPair) -> None:
        assert (await pair.exchange(b"USER " + user + b"\r\n")).startswith(b"+OK")
        reply = await pair.exchange(b"PASS " + password + b"\r\n")
        assert reply == b"-ERR [AUTH] authentication failed\r\n"
        await _demo_login(pair)  # the session goes on normally
        assert (await pair.exchange(b"STAT\r\n")).startswith(b"+OK 3 ")

    upstream = _demo(script, DemoUpstream(pipelining=True))
    assert _login_batches(upstream)[0] == ["USER", "PASS"]  # it was pipelined
