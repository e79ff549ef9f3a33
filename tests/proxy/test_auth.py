"""AuthHandler returns what a login line leads to; it never touches a session (issue 16).

Only exchanges that end before an upstream is contacted: logins through an upstream are
covered on the session harness in test_session_logic.py and test_session_sasl.py.
"""

from __future__ import annotations

import asyncio
import base64
from typing import Any

from popproxy.metrics import Metrics
from popproxy.pop3 import limits
from popproxy.pop3.events import Command
from popproxy.pop3.sasl import Credentials
from popproxy.pop3.state import Event
from popproxy.proxy.auth import (
    AUTH_FAILED,
    TOO_MANY_FAILURES,
    AuthHandler,
    AuthResult,
    Refused,
    Reply,
    SaslStarted,
    _forwardable,
)
from popproxy.proxy.observe import Observer
from popproxy.proxy.settings import SessionSettings
from tests.helpers import make_config


class Audit:
    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []

    def __call__(self, event: str, **fields: Any) -> None:
        self.events.append((event, fields))


def _handler(**limits: Any) -> tuple[AuthHandler, Audit]:
    config = make_config(110, limits=limits)
    settings = SessionSettings(config, config.listeners[0], None, {},
                               Observer(metrics=Metrics()))
    audit = Audit()
    return AuthHandler(settings, None, "192.0.2.1:1234", audit), audit


def _command(handler: AuthHandler, line: str) -> AuthResult:
    verb, *args = line.split()
    return asyncio.run(handler.command(Command(verb, tuple(a.encode() for a in args)), False))


def test_user_is_accepted_as_a_transition_and_a_reply() -> None:
    handler, _ = _handler()
    assert _command(handler, "USER alice") == Reply(b"+OK send PASS\r\n", Event.USER_ACCEPTED)


def test_pass_without_user_is_a_plain_reply() -> None:
    handler, _ = _handler()
    result = _command(handler, "PASS secret")
    assert isinstance(result, Reply) and result.event is None
    assert result.data.startswith(b"-ERR")


def test_auth_with_an_initial_response_hands_it_back_for_the_session() -> None:
    handler, _ = _handler()
    initial = base64.b64encode(b"\0alice\0secret").decode()
    result = _command(handler, f"AUTH PLAIN {initial}")
    assert result == SaslStarted(b"+ \r\n", initial.encode())


def test_sasl_cancel_is_a_refusal_that_does_not_count() -> None:
    handler, _ = _handler()
    assert isinstance(_command(handler, "AUTH PLAIN"), SaslStarted)
    result = asyncio.run(handler.sasl_step(b"*", False))
    assert result == Refused(b"-ERR authentication cancelled\r\n")
    assert handler.failures == 0


def test_malformed_credentials_refuse_and_close_at_the_limit() -> None:
    handler, audit = _handler(max_login_failures=2)
    malformed = base64.b64encode(b"no separators")
    results = []
    for _ in range(2):
        _command(handler, "AUTH PLAIN")
        results.append(asyncio.run(handler.sasl_step(malformed, False)))
    first, second = results
    assert isinstance(first, Refused) and not first.close
    assert isinstance(second, Refused) and second.close
    assert second.reply.endswith(TOO_MANY_FAILURES)
    assert [fields["result"] for event, fields in audit.events if event == "login"] == [
        "malformed", "malformed"]
    assert first.reply != AUTH_FAILED  # its own reason, with the [AUTH] code
    assert b"[AUTH]" in first.reply


def test_credentials_are_forwardable_only_as_one_valid_command_line() -> None:
    longest = limits.MAX_COMMAND_LINE - len(b"PASS \r\n")  # "PASS " + password + CRLF
    assert _forwardable(Credentials(b"alice", b"p" * longest))
    assert not _forwardable(Credentials(b"alice", b"p" * (longest + 1)))
    assert _forwardable(Credentials(b"alice", b"pass word"))  # spaces: PASS takes the rest
    for username, password in ((b"al ice", b"pw"), (b"alice", b"p\0w"), (b"al\rice", b"pw"),
                               (b"alice", b"p\nw"), (b"", b"pw"), (b"alice", b"")):
        assert not _forwardable(Credentials(username, password)), (username, password)
