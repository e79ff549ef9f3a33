"""The parser events: frozen values whose wire data stays bytes (house rule 2)."""

from __future__ import annotations

import dataclasses

import pytest

from popproxy.pop3.events import NEED_DATA, BadCommand, BadLine, Command, Need, StatusLine


def test_command_renders_its_canonical_wire_form() -> None:
    assert Command("STAT").render() == b"STAT\r\n"
    assert Command("TOP", (b"1", b"10")).render() == b"TOP 1 10\r\n"


def test_pass_argument_with_spaces_renders_as_one_argument() -> None:
    # RFC 1939 section 7: the password is the rest of the line, spaces included.
    assert Command("PASS", (b"two words",)).render() == b"PASS two words\r\n"


def test_status_line_kind_and_text() -> None:
    ok = StatusLine("+OK", b"+OK 2 320\r\n", multiline=False)
    err = StatusLine("-ERR", b"-ERR [AUTH] no\r\n", multiline=False)
    challenge = StatusLine("+", b"+ \r\n", multiline=False)
    assert (ok.ok, ok.text) == (True, b"2 320")
    assert (err.ok, err.text) == (False, b"[AUTH] no")
    assert (challenge.ok, challenge.text) == (False, b"")


def test_events_are_frozen_values() -> None:
    assert Command("USER", (b"a",)) == Command("USER", (b"a",))
    assert BadCommand(BadLine.TOO_LONG) != BadCommand(BadLine.EMPTY)
    with pytest.raises(dataclasses.FrozenInstanceError):
        Command("USER").verb = "PASS"  # type: ignore[misc]


def test_need_data_is_a_sentinel_not_an_event() -> None:
    assert NEED_DATA is Need.DATA
    assert not isinstance(NEED_DATA, Command | StatusLine | BadCommand)
