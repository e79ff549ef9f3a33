"""``proxy.errors.SessionEnd``: "stop the session after flushing what was already written
(not an error)".  The class has no behaviour of its own, so its contract is checked where
sessions raise it, on the session harness: the last reply reaches the client, the client is
closed, no error is logged.  (Its other raise sites, STLS injection and a login refused with
close, are covered by tests/tls/test_client_tls.py and test_lockout_session.py.)"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from popproxy.pop3 import limits
from tests.helpers import make_config
from tests.support.harness import SessionPair

GREETING = b"+OK POP3 proxy ready\r\n"


def _run(script: Callable[[SessionPair], Awaitable[None]], **config: Any) -> SessionPair:
    async def main() -> SessionPair:
        async with SessionPair(make_config(110, **config)) as pair:
            await script(pair)
            assert pair.ended and pair.closed
            return pair

    return asyncio.run(main())


def test_too_many_bad_commands_answer_then_close(caplog: pytest.LogCaptureFixture) -> None:
    async def script(pair: SessionPair) -> None:
        assert pair.received() == GREETING
        await pair.send(b"\r\n" * limits.MAX_BAD_COMMANDS)
        replies = pair.received().splitlines(keepends=True)
        # Each bad line gets its answer, the last one then the closing line, all flushed.
        assert replies[:-1] == [b"-ERR [SYS/PERM] empty command line\r\n"] * (
            limits.MAX_BAD_COMMANDS)
        assert replies[-1] == b"-ERR [SYS/PERM] too many bad commands, closing\r\n"

    with caplog.at_level(logging.INFO):
        pair = _run(script)
    assert "internal error" not in caplog.text
    assert pair.upstream.verbs == []  # nothing reached the upstream


def test_the_client_closing_ends_the_session_quietly(caplog: pytest.LogCaptureFixture) -> None:
    async def script(pair: SessionPair) -> None:
        await pair.send(b"")

    with caplog.at_level(logging.INFO):
        pair = _run(script)
    assert pair.received() == GREETING
    assert "internal error" not in caplog.text


def test_implicit_tls_without_a_certificate_sends_nothing() -> None:
    listener = {"name": "pop3s", "host": "127.0.0.1", "port": 1, "mode": "tls"}

    async def script(pair: SessionPair) -> None:
        assert pair.received() == b""  # no plaintext greeting on a TLS port

    _run(script, listeners=[listener])
