"""STLS and login-before-TLS on a ``starttls`` listener, on the session harness: the parts
decided in plaintext, before any handshake (RFC 2595).

Moved from tests/tls/test_client_tls.py; what needs a real TLS handshake (STLS itself, CAPA
after it, plaintext after +OK killing the handshake) stays there.
"""

from __future__ import annotations

import ssl
from collections.abc import Awaitable, Callable

import pytest

from popproxy.proxy.demo_upstream import DemoUpstream
from tests.helpers import make_config
from tests.support.harness import ScriptedUpstream, SessionPair, demo_responder, run

STARTTLS = [{"name": "stls", "host": "127.0.0.1", "port": 1, "mode": "starttls"}]


def _stls_session(script: Callable[[SessionPair], Awaitable[None]]) -> ScriptedUpstream:
    upstream = ScriptedUpstream(respond=demo_responder(DemoUpstream()))
    # Never used for a handshake here: its presence makes the listener offer STLS.
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)

    async def main() -> None:
        async with SessionPair(make_config(110, listeners=STARTTLS), upstream,
                               server_tls=context) as pair:
            assert pair.received() == b"+OK POP3 proxy ready\r\n"
            await script(pair)

    run(main)
    return upstream


def test_stls_injection_pipelined_command() -> None:
    """CVE-2011-0411: a command sent in the same segment as STLS must never run inside TLS."""

    async def script(pair: SessionPair) -> None:
        rest = await pair.exchange(b"STLS\r\nCAPA\r\n")
        assert rest == b"-ERR [SYS/PERM] data after STLS is not allowed, closing\r\n"
        assert pair.ended and pair.closed

    assert _stls_session(script).verbs == []


@pytest.mark.parametrize(
    "line",
    [b"USER demo", b"PASS demo", b"AUTH PLAIN AGRlbW8AZGVtbw==", b"AUTH LOGIN", b"APOP demo 0123"],
)
def test_login_before_tls_refused(line: bytes) -> None:
    async def script(pair: SessionPair) -> None:
        reply = await pair.exchange(line + b"\r\n")
        assert reply == b"-ERR [SYS/PERM] TLS is required before login: use STLS\r\n"
        assert (await pair.exchange(b"QUIT\r\n")).startswith(b"+OK")

    assert _stls_session(script).verbs == []


def test_stls_injection_in_a_later_read_before_stls_is_answered() -> None:
    """CVE-2011-0411 again: the injected bytes are sent on their own, but before the proxy has
    answered STLS (both in the socket when the session reads): refused and closed all the
    same.  (Bytes that come after the answer are read as TLS: test_socket_channel.py.)"""

    async def script(pair: SessionPair) -> None:
        pair.feed(b"STLS\r\n")
        await pair.send(b"CAPA\r\n")  # no loop step in between
        assert pair.received() == (b"-ERR [SYS/PERM] data after STLS is not allowed, "
                                   b"closing\r\n")
        assert pair.ended and pair.closed

    assert _stls_session(script).verbs == []
