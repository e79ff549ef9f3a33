"""The quarantine notice padded to a size the client was told (issue 17, listing budget)."""

from __future__ import annotations

import email
import email.policy

import pytest

from popproxy.pop3.framing import Unstuffer, stuff_body
from popproxy.scan.sized_notice import padded_notice, padding


@pytest.mark.parametrize("size", [0, 1, 2, 3, 29, 30, 31, 150, 151, 152, 153, 200, 299, 300,
                                  301, 302, 378, 379, 380, 4096, 100_003])
def test_the_notice_has_exactly_the_size_asked(size: int) -> None:
    notice = padded_notice("0123456789abcdef", 0.0, size)
    assert len(notice) == size
    # What a client gets once the wire's dot-stuffing is undone: the same octets (a message
    # that does not end in CRLF, only the tiniest odd sizes, gets one on the wire, as any does).
    unstuffed = Unstuffer().feed(stuff_body(notice)[: -len(b".\r\n")])
    assert unstuffed == (notice if notice.endswith(b"\r\n") or not notice else notice + b"\r\n")
    assert notice.endswith(b"\r\n") or size < 30


def test_a_notice_with_room_is_a_valid_message_quoting_the_id() -> None:
    notice = padded_notice("0123456789abcdef", 0.0, 5000)
    parsed = email.message_from_bytes(notice, policy=email.policy.default)
    assert parsed["From"] and parsed["Date"]
    assert b"Quarantine id: 0123456789abcdef" in notice
    lines = notice.split(b"\r\n")
    assert all(len(line) <= 998 and not line.startswith(b".") for line in lines)
    assert notice.endswith(b"\r\n") and b"\n" not in notice.replace(b"\r\n", b"")


@pytest.mark.parametrize("size", [151, 200, 299])
def test_a_small_message_gets_the_short_notice_with_the_id(size: int) -> None:
    notice = padded_notice("0123456789abcdef", 0.0, size)
    parsed = email.message_from_bytes(notice, policy=email.policy.default)
    assert parsed["From"] and parsed["Date"] and "QUARANTINED" in parsed["Subject"]
    assert b"0123456789abcdef" in notice


def test_padding_lines_are_crlf_terminated() -> None:
    for octets in (2, 3, 78, 79, 80, 157):
        pad = padding(octets)
        assert len(pad) == octets and pad.endswith(b"\r\n")
