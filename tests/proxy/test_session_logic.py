"""Session logic on the in-memory harness (tests/support/harness.py): no sockets, no sleeps.

Moved from test_session.py, where they ran against a listening proxy and the demo upstream.
``ScriptedUpstream.verbs`` records what reached the upstream, so these tests also check what
the proxy does NOT forward.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from tests.helpers import make_config
from tests.support.harness import ScriptedUpstream, SessionPair

STAT = b"+OK 2 300\r\n"
UPSTREAM = {"PASS": b"+OK logged in\r\n", "STAT": STAT, "CAPA": b"-ERR no CAPA\r\n"}


def _run(script: Callable[[SessionPair], Awaitable[None]],
         upstream: ScriptedUpstream | None = None) -> ScriptedUpstream:
    upstream = upstream or ScriptedUpstream(UPSTREAM)

    async def main() -> None:
        async with SessionPair(make_config(110), upstream) as pair:
            assert pair.received() == b"+OK POP3 proxy ready\r\n"
            await script(pair)

    asyncio.run(main())
    return upstream


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
        assert pair.ended and pair.transport.closed

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
