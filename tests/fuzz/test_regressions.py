"""Bugs the fuzzers found, one small reproducer each (strict xfail until fixed).

Each scanner entry matches a ``KNOWN_SCANNER_BUGS`` entry in ``harness.py`` (the fuzzers count
those apart).  When a fix lands, the test here XPASSes, which strict mode reports as a failure:
remove the xfail mark and the ``KNOWN_SCANNER_BUGS`` entry together.
"""

from __future__ import annotations

import dataclasses

import pytest

from popproxy.pop3 import limits
from popproxy.pop3.commands import CommandParser
from popproxy.pop3.events import BadCommand, BadLine, Command
from popproxy.scan import Action, Scanner, Verdict, apply_action

PHISH_BODY = (b"Content-Type: text/html\r\n\r\n"
              b'<a href="http://198.51.100.7/login">https://www.paypal.com/</a>'
              b'<form action="http://198.51.100.7/p"><input type=password></form>\r\n')
OBFUSCATED_LINK = b"\r\nLog in at http://0x7f.0.0.1/login today\r\n"  # scores 6: "tag"


def _scan(message: bytes) -> Verdict:
    return Scanner(feeds=()).scan(message)


# --------------------------------------------------------------------------- scanner bypasses


@pytest.mark.parametrize("subject", [
    b"=?utf-8?B?SGVsbG8hI?=",  # base64 of length 1 mod 4: HeaderParseError (fixed)
    b"=?utf\xc3\xa98?q?hi?=",  # 8-bit charset name: CharsetError (fixed)
], ids=["base64-padding", "8bit-charset"])
def test_broken_encoded_word_does_not_bypass_the_scanner(subject: bytes) -> None:
    message = b"From: a@example.test\r\nSubject: " + subject + b"\r\n" + PHISH_BODY
    assert _scan(message).action == "quarantine"  # 15.5 without the broken Subject


def test_nul_in_charset_does_not_bypass_the_scanner() -> None:
    """A NUL in the declared charset made codecs.lookup raise ValueError (fixed)."""
    message = (b"From: a@example.test\r\nSubject: Verify\r\n"
               + PHISH_BODY.replace(b"text/html", b'text/html; charset="utf-8\x00"'))
    assert _scan(message).action == "quarantine"


# --------------------------------------------------------------------------- actions raising
def _render(message: bytes, action: Action) -> bytes:
    verdict = dataclasses.replace(_scan(message), action=action)
    return apply_action(message, verdict, quarantine_id="0" * 16, clock=lambda: 1e9)


@pytest.mark.xfail(strict=True, reason=(
    "bug (crash): headers._prefix_subject does f.split(b':', 1)[1] on a header line named "
    "Subject without a colon -> IndexError from tag_message (the proxy now falls back to "
    "verdict headers in front of the original: no Subject prefix)"))
def test_tag_survives_a_subject_line_without_colon() -> None:
    message = b"From: a@example.test\r\nSubject\r\n" + OBFUSCATED_LINK
    assert _scan(message).action == "tag"
    assert _render(message, "tag").startswith(b"X-Popproxy-Verdict: tag")


@pytest.mark.xfail(strict=True, reason=(
    "bug (crash): defang._rewrite_part calls part.set_param('charset', ...) when the text no "
    "longer fits the declared charset; with 8-bit bytes in Content-Type compat32 returns an "
    "email.header.Header and set_param raises TypeError (in the proxy: verdict headers in "
    "front of the original instead, links stay live)"))
def test_defang_survives_8bit_content_type() -> None:
    message = (b"From: a@example.test\r\nSubject: hi\r\n"
               b'Content-Type: text/plain; name="caf\xc3\xa9.txt"\r\n'
               + OBFUSCATED_LINK + b"caf\xc3\xa9\r\n")
    assert b"hxxp" in _render(message, "defang")


@pytest.mark.xfail(strict=True, reason=(
    "bug (crash): defang_message re-serialises with BytesGenerator, which writes a multipart "
    "body it could not split (no boundary parameter) as ASCII -> UnicodeEncodeError on 8-bit "
    "text (in the proxy: verdict headers in front of the original instead, links stay live)"))
def test_defang_survives_8bit_multipart_without_boundary() -> None:
    message = (b"From: a@example.test\r\nSubject: hi\r\nContent-Type: multipart/mixed\r\n"
               + OBFUSCATED_LINK + b"Gr\xc3\xbc\xc3\x9fe\r\n")
    assert _render(message, "defang")


@pytest.mark.xfail(strict=True, reason=(
    "bug (crash): defang_message re-folds headers; a raw \\x1c (a str.splitlines() separator) "
    "followed by 'Name:' in a header value makes email.header.Header.encode raise "
    "HeaderParseError('header value appears to contain an embedded header') (in the proxy: "
    "verdict headers in front of the original instead, links stay live)"))
def test_defang_survives_a_file_separator_in_a_header() -> None:
    message = b"From: a@example.test\r\nSubject: invoice\x1cX-Note: paid\r\n" + OBFUSCATED_LINK
    assert _render(message, "defang")


# --------------------------------------------------------------------------- POP3 core
def test_command_forwarded_upstream_fits_255_octets() -> None:
    """RFC 2449 s4: what reaches the upstream never exceeds 255 octets; a bare-LF line that
    would become 256 octets with CRLF is refused like any over-long line."""
    line = b"USER " + b"u" * (limits.MAX_COMMAND_LINE - 6) + b"\n"  # 255 octets with the LF
    parser = CommandParser()
    parser.receive_data(line)
    event = parser.next_event()
    if isinstance(event, Command):
        assert len(event.render()) <= limits.MAX_COMMAND_LINE
    else:
        assert event == BadCommand(BadLine.TOO_LONG)
