"""The login deadline (limits.login_timeout) on the session harness, on a virtual clock.

Moved from test_prelogin_limits.py, where a client dripped bytes over loopback and the test
slept past the deadline.  Here ``SessionPair.advance`` moves the loop's clock (harness.ClockLoop)
without waiting, so each test checks the cut happens exactly at the deadline and not before.
The attack: a slow-loris holds a session slot without ever logging in (one byte every few
seconds kept a connection for 690 s behind the >= 600 s idle timeout).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest

from popproxy.proxy.demo_upstream import DemoUpstream
from tests.faults.support import Observed
from tests.helpers import make_config
from tests.support.harness import ScriptedUpstream, SessionPair, demo_responder, run

LOGIN_TIMEOUT = 1.0
DRIP = 0.2  # seconds between the slow client's bytes
TOO_SLOW = b"-ERR [SYS/TEMP] login took too long, closing\r\n"
GREETING = b"+OK POP3 proxy ready\r\n"


def _session(script: Callable[[SessionPair], Awaitable[None]],
             upstream: ScriptedUpstream | None = None,
             observed: Observed | None = None) -> ScriptedUpstream:
    upstream = upstream or ScriptedUpstream(respond=demo_responder(DemoUpstream()))
    config = make_config(110, limits={"login_timeout": LOGIN_TIMEOUT, "max_login_failures": 50},
                         upstream={"host": "127.0.0.1", "port": 110, "response_timeout": 60})

    async def main() -> None:
        async with SessionPair(config, upstream,
                               None if observed is None else observed.observer) as pair:
            assert pair.now() == 0.0  # the clock starts at accept
            assert pair.received() == GREETING
            await script(pair)

    run(main)
    return upstream


async def _drip(pair: SessionPair, chunks: list[bytes]) -> bytes:
    """Send ``chunks`` one every DRIP seconds (cycling) until the session ends; what the
    client received meanwhile.  Checks that the session was alive until the deadline."""
    index = 0
    while not pair.ended:
        assert pair.now() < LOGIN_TIMEOUT, "still connected after the deadline"
        await pair.send(chunks[index % len(chunks)])
        index += 1
        await pair.advance(DRIP)
    assert pair.now() == pytest.approx(LOGIN_TIMEOUT)
    return pair.received()


@pytest.mark.parametrize("chunks", [
    pytest.param([b"U", b"S", b"E", b"R", b" ", b"a"], id="one-byte-per-drip"),
    pytest.param([b"CAPA\r\n"], id="complete-commands"),
    pytest.param([b"USER demo\r\n", b"PASS wrong\r\n"], id="failed-logins"),
    pytest.param([b"AUTH LOGIN\r\n"] + [b"Z"] * 50, id="inside-auth-exchange"),
])
def test_slow_drip_client_is_cut_off_at_the_login_deadline(chunks: list[bytes]) -> None:
    observed = Observed.new()

    async def script(pair: SessionPair) -> None:
        received = await _drip(pair, chunks)
        assert received.endswith(TOO_SLOW)
        assert pair.closed

    _session(script, observed=observed)
    assert observed.sample("popproxy_logins_total", result="timeout") == 1
    assert [e["result"] for e in observed.events("login")][-1] == "timeout"


def test_silent_client_is_cut_off_at_the_login_deadline_not_the_idle_timeout() -> None:
    async def script(pair: SessionPair) -> None:
        await pair.advance(LOGIN_TIMEOUT - DRIP)
        assert not pair.ended and pair.received() == b""
        await pair.advance(DRIP)
        assert pair.ended and pair.closed
        assert pair.received() == TOO_SLOW

    assert _session(script).verbs == []  # nothing reached the upstream: nothing lost


def test_login_deadline_during_a_stalled_upstream_login_closes_the_upstream_too() -> None:
    """Cut mid-login, the half-made upstream connection is closed (no QUIT), not leaked."""
    # Takes USER, never answers PASS (b"": no reply); its response_timeout is 60 s.
    stalling = ScriptedUpstream({"CAPA": b"-ERR no CAPA\r\n", "PASS": b""})

    async def script(pair: SessionPair) -> None:
        assert await pair.exchange(b"USER alice\r\n") == b"+OK send PASS\r\n"
        await pair.advance(DRIP)
        # Nothing but timers left: settle jumps the clock to the first, the login deadline.
        await pair.send(b"PASS secret\r\n")
        assert pair.ended and pair.now() == LOGIN_TIMEOUT
        assert pair.received() == TOO_SLOW

    _session(script, stalling)
    assert "PASS" in stalling.verbs and "QUIT" not in stalling.verbs
    assert stalling.connections and all(t.closed for t in stalling.connections)


def test_normal_login_is_unaffected_by_the_login_deadline() -> None:
    """Logged in before the deadline: the session outlives it (only the idle timeout)."""
    observed = Observed.new()

    async def script(pair: SessionPair) -> None:
        assert await pair.exchange(b"USER demo\r\n") == b"+OK send PASS\r\n"
        assert await pair.exchange(b"PASS demo\r\n") == b"+OK logged in\r\n"
        await pair.advance(LOGIN_TIMEOUT + 0.5)
        assert not pair.ended
        assert (await pair.exchange(b"STAT\r\n")).startswith(b"+OK 3 ")
        assert (await pair.exchange(b"QUIT\r\n")).startswith(b"+OK")

    _session(script, observed=observed)
    assert observed.sample("popproxy_logins_total", result="timeout") == 0
    assert observed.sample("popproxy_logins_total", result="ok") == 1
