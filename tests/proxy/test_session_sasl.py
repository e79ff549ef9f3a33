"""AUTH (RFC 5034) in the session, on the session harness (tests/support/harness.py).

Moved from test_session.py and test_sasl_regression.py, where they ran against a listening
proxy and the demo upstream; the upstream here answers as the demo does (``demo_responder``).
"""

from __future__ import annotations

import base64
from collections.abc import Awaitable, Callable

import pytest

from popproxy.proxy.demo_upstream import SAMPLE_MESSAGES, DemoUpstream
from tests.helpers import make_config
from tests.support.harness import ScriptedUpstream, SessionPair, demo_responder, run_greeted

DEMO_STAT = b"+OK %d %d\r\n" % (len(SAMPLE_MESSAGES), sum(map(len, SAMPLE_MESSAGES)))
LOGGED_IN = b"+OK logged in\r\n"


def _b64(data: bytes) -> bytes:
    return base64.b64encode(data)


def _session(script: Callable[[SessionPair], Awaitable[None]]) -> ScriptedUpstream:
    """Run ``script`` against a session in front of the demo's answers; the upstream's record."""
    upstream = ScriptedUpstream(respond=demo_responder(DemoUpstream()))
    return run_greeted(script, upstream, make_config(110))


async def _say(pair: SessionPair, line: bytes) -> bytes:
    """One client line (CRLF added): the reply."""
    return await pair.exchange(line + b"\r\n")


async def _login(pair: SessionPair) -> None:
    assert await _say(pair, b"USER demo") == b"+OK send PASS\r\n"
    assert await _say(pair, b"PASS demo") == LOGGED_IN


def test_auth_lists_mechanisms() -> None:
    async def script(pair: SessionPair) -> None:
        reply = await _say(pair, b"AUTH")
        assert reply.split(b"\r\n")[1:] == [b"PLAIN", b"LOGIN", b".", b""]

    _session(script)


def test_auth_plain_with_initial_response() -> None:
    async def script(pair: SessionPair) -> None:
        assert await _say(pair, b"AUTH PLAIN " + _b64(b"\0demo\0demo")) == LOGGED_IN
        assert await _say(pair, b"STAT") == DEMO_STAT

    _session(script)


@pytest.mark.parametrize("authzid", [b"", b"demo"])
def test_auth_plain_without_initial_response(authzid: bytes) -> None:
    async def script(pair: SessionPair) -> None:
        assert await _say(pair, b"auth plain") == b"+ \r\n"
        assert await _say(pair, _b64(authzid + b"\0demo\0demo")) == LOGGED_IN
        assert await _say(pair, b"STAT") == DEMO_STAT

    _session(script)


def test_auth_plain_other_authzid_refused() -> None:
    async def script(pair: SessionPair) -> None:
        assert (await _say(pair, b"AUTH PLAIN " + _b64(b"admin\0demo\0demo"))).startswith(b"-ERR")
        assert (await _say(pair, b"STAT")).startswith(b"-ERR")

    assert _session(script).verbs == []  # refused before any upstream login


def test_auth_login() -> None:
    async def script(pair: SessionPair) -> None:
        assert await _say(pair, b"AUTH LOGIN") == b"+ " + _b64(b"Username:") + b"\r\n"
        assert await _say(pair, _b64(b"demo")) == b"+ " + _b64(b"Password:") + b"\r\n"
        assert await _say(pair, _b64(b"demo")) == LOGGED_IN
        assert await _say(pair, b"STAT") == DEMO_STAT

    _session(script)


def test_auth_login_with_initial_response() -> None:
    async def script(pair: SessionPair) -> None:
        reply = await _say(pair, b"AUTH LOGIN " + _b64(b"demo"))
        assert reply == b"+ " + _b64(b"Password:") + b"\r\n"
        assert await _say(pair, _b64(b"demo")) == LOGGED_IN

    _session(script)


def test_auth_pipelined_with_following_commands() -> None:
    async def script(pair: SessionPair) -> None:
        reply = await pair.exchange(b"AUTH PLAIN\r\n" + _b64(b"\0demo\0demo")
                                    + b"\r\nSTAT\r\nLIST 1\r\n")
        assert reply == (b"+ \r\n" + LOGGED_IN + DEMO_STAT
                         + b"+OK 1 %d\r\n" % len(SAMPLE_MESSAGES[0]))

    _session(script)


@pytest.mark.parametrize(
    "steps",
    [
        [b"AUTH PLAIN"],
        [b"AUTH LOGIN"],
        [b"AUTH LOGIN", _b64(b"demo")],
    ],
    ids=["plain", "login-at-username", "login-at-password"],
)
def test_auth_cancel(steps: list[bytes]) -> None:
    async def script(pair: SessionPair) -> None:
        for _ in range(4):  # cancelling is not a failed login: more than max_login_failures
            for step in steps:
                assert (await _say(pair, step)).startswith(b"+ ")
            assert (await _say(pair, b"*")).startswith(b"-ERR")
        assert (await _say(pair, b"STAT")).startswith(b"-ERR")  # back in AUTHORIZATION
        await _login(pair)
        assert await _say(pair, b"STAT") == DEMO_STAT

    assert [v for v in _session(script).verbs if v != "CAPA"][:2] == ["USER", "PASS"]


@pytest.mark.parametrize("line", [b"not base64!", b"AAA", b"\xff\xfe"])
def test_auth_invalid_base64(line: bytes) -> None:
    async def script(pair: SessionPair) -> None:
        assert await _say(pair, b"AUTH PLAIN") == b"+ \r\n"
        assert (await _say(pair, line)).startswith(b"-ERR")
        await _login(pair)

    _session(script)


@pytest.mark.parametrize(
    "payload",
    [
        b"\0demo\r\nDELE 1\0demo",  # CRLF in the user name
        b"\0demo\0demo\r\nDELE 1",  # CRLF in the password
        b"\0demo\nDELE 1\0demo",  # bare LF
        b"\0de mo\0demo",  # a space would split USER's argument
        b"\0demo\0" + b"p" * 250,  # "PASS " + password + CRLF > 255 octets
    ],
    ids=["crlf-user", "crlf-pass", "lf-user", "space-user", "long-pass"],
)
def test_sasl_credentials_cannot_inject_upstream_commands(payload: bytes) -> None:
    async def script(pair: SessionPair) -> None:
        # long: no initial response (RFC 5034)
        assert await _say(pair, b"AUTH PLAIN") == b"+ \r\n"
        assert (await _say(pair, _b64(payload))).startswith(b"-ERR [AUTH]")
        assert (await _say(pair, b"AUTH LOGIN")).startswith(b"+ ")
        user, _, password = payload[1:].partition(b"\0")
        assert (await _say(pair, _b64(user))).startswith(b"+ ")
        assert (await _say(pair, _b64(password))).startswith(b"-ERR [AUTH]")

    assert _session(script).verbs == []


def test_auth_unsupported_mechanism() -> None:
    async def script(pair: SessionPair) -> None:
        assert (await _say(pair, b"AUTH CRAM-MD5")).startswith(b"-ERR")
        assert (await _say(pair, b"AUTH GSSAPI")).startswith(b"-ERR")
        await _login(pair)

    _session(script)


def test_too_long_sasl_response_ends_the_exchange() -> None:
    async def script(pair: SessionPair) -> None:
        assert await _say(pair, b"AUTH PLAIN") == b"+ \r\n"
        # RFC 5034 s4: the exchange failed
        assert (await _say(pair, b"A" * 9000)).startswith(b"-ERR")
        # The client now believes it is back in AUTHORIZATION (it got -ERR), so:
        reply = await _say(pair, b"CAPA")
        assert reply.startswith(b"+OK") and b"\r\nUSER\r\n" in reply

    _session(script)


def test_overlong_sasl_line_ends_the_auth_exchange() -> None:
    """Regression: a too-long SASL response must not leave the parser in SASL mode."""

    async def script(pair: SessionPair) -> None:
        assert (await _say(pair, b"AUTH PLAIN")).startswith(b"+ ")
        assert (await _say(pair, b"A" * 9000)).startswith(b"-ERR")
        assert (await _say(pair, b"USER demo")).startswith(b"+OK")
        assert (await _say(pair, b"PASS demo")).startswith(b"+OK")

    _session(script)
