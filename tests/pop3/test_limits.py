"""The POP3 size limits keep the numbers of the RFCs they cite (the parsers' tests check that
each limit is enforced; these pin the values and how they relate)."""

from __future__ import annotations

from popproxy.pop3 import limits


def test_rfc_numbers() -> None:
    assert limits.MAX_COMMAND_LINE == 255  # RFC 2449 section 4
    assert limits.MAX_STATUS_LINE == 512  # RFC 1939 section 3
    assert limits.MAX_CAPA_LINE == limits.MAX_STATUS_LINE  # RFC 2449 section 6.1


def test_sasl_lines_may_exceed_command_lines() -> None:
    # RFC 5034 section 4 lifts the command limit for base64 responses.
    assert limits.MAX_SASL_LINE > limits.MAX_COMMAND_LINE


def test_our_own_bounds_are_positive_and_small() -> None:
    assert 0 < limits.MAX_BAD_COMMANDS <= 100
    assert 9 <= limits.MAX_CAPA_LINES <= 1000  # Dovecot advertises 9 capabilities
