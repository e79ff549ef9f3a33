"""The verb facts table (pop3/verbs.py) and what the rest of the core derives from it."""

from __future__ import annotations

import pytest

from popproxy.pop3.commands import CommandParser, parse_command_line, valid_transaction_args
from popproxy.pop3.events import Command, SaslResponse
from popproxy.pop3.framing import expects_multiline
from popproxy.pop3.state import ALLOWED_VERBS, State
from popproxy.pop3.verbs import VERBS, allowed_in
from tests.pop3.feeding import Feed, enter_sasl, feed_parser

RFC_1939_BASE = {"USER", "PASS", "APOP", "QUIT", "STAT", "LIST", "RETR", "DELE", "NOOP", "RSET",
                 "TOP", "UIDL"}


def test_the_table_pins_every_verb() -> None:
    # RFC 1939 plus CAPA (RFC 2449 s5), STLS (RFC 2595 s4), AUTH (RFC 5034 s4): a verb added
    # or dropped here changes what clients can reach, so it must be a deliberate edit.
    assert set(VERBS) == RFC_1939_BASE | {"CAPA", "STLS", "AUTH"}
    for name, facts in VERBS.items():
        assert facts.name == name
        assert facts.phases, name
        assert facts.rfc.startswith("RFC "), name


def test_allowed_verbs_per_state_come_from_the_table() -> None:
    login = {"USER", "PASS", "APOP", "AUTH", "STLS", "CAPA", "QUIT"}
    transaction = {"STAT", "LIST", "RETR", "DELE", "NOOP", "RSET", "QUIT", "TOP", "UIDL", "CAPA"}
    assert allowed_in("login") == login
    assert allowed_in("transaction") == transaction
    assert {
        State.AUTHORIZATION: login,
        State.AUTHORIZATION_USER: login,
        State.AUTHORIZATION_SASL: frozenset(),  # lines are SASL responses, not commands
        State.TRANSACTION: transaction,
        State.UPDATE: frozenset(),
        State.CLOSED: frozenset(),
    } == ALLOWED_VERBS


@pytest.mark.parametrize("verb", sorted(VERBS))
def test_multiline_reply_drives_the_framer(verb: str) -> None:
    facts = VERBS[verb]
    bare, with_arg = Command(verb), Command(verb, (b"1",))
    expected = {"always": (True, True), "with-no-arg": (True, False), "never": (False, False)}
    assert (expects_multiline(bare), expects_multiline(with_arg)) == expected[
        facts.multiline_reply]


def test_unknown_verbs_never_expect_a_body() -> None:
    assert not expects_multiline(Command("XTND"))


@pytest.mark.parametrize("verb", sorted(ALLOWED_VERBS[State.TRANSACTION]))
def test_transaction_args_come_from_the_table(verb: str) -> None:
    args = VERBS[verb].args
    assert args is not None
    low, high = args
    for count in range(4):
        cmd = Command(verb, tuple(b"1" for _ in range(count)))
        assert valid_transaction_args(cmd) is (low <= count <= high), (verb, count)


def test_login_verbs_have_no_numeric_args() -> None:
    assert not valid_transaction_args(Command("USER", (b"1",)))


def test_rest_of_line_keeps_spaces_only_for_pass() -> None:
    assert [v for v, f in VERBS.items() if f.rest_of_line] == ["PASS"]
    assert parse_command_line(b"PASS a  b ") == Command("PASS", (b"a  b ",))


def test_the_parser_follows_the_state_not_a_flag_of_its_own(feed: Feed) -> None:
    parser = CommandParser()
    assert feed_parser(b"AUTH PLAIN\r\n", feed, parser=parser) == [Command("AUTH", (b"PLAIN",))]
    enter_sasl(parser)
    assert parser.session.state is State.AUTHORIZATION_SASL
    assert feed_parser(b"NOOP\r\n", feed, parser=parser) == [SaslResponse(b"NOOP")]
