"""Bugs the fuzzers found, one small reproducer each (strict xfail until fixed).

Each scanner entry matches a ``KNOWN_SCANNER_BUGS`` entry in ``harness.py`` (the fuzzers count
those apart).  When a fix lands, the test here XPASSes, which strict mode reports as a failure:
remove the xfail mark and the ``KNOWN_SCANNER_BUGS`` entry together.
"""

from __future__ import annotations

import dataclasses
import email
import email.policy
from email.message import Message

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


def test_deep_nesting_does_not_bypass_the_scanner() -> None:
    """The stdlib parser raises RecursionError at ~980 nested multiparts (85 KB); that used to
    be "unscanned" (fixed: parse_message reads such a body as text, with limit-structure,
    which makes it defang at least: links inside encoded parts are unread)."""
    body = b"Content-Type: text/plain\r\n\r\nLog in at http://0x7f.0.0.1/login today\r\n"
    for level in range(1200):
        b = b"b%d" % level
        body = (b'Content-Type: multipart/mixed; boundary="' + b + b'"\r\n\r\n--' + b + b"\r\n"
                + body + b"\r\n--" + b + b"--\r\n")
    verdict = _scan(b"From: a@example.test\r\nSubject: hi\r\n" + body)
    assert {"limit-structure", "link-ip-obfuscated"} <= {s.name for s in verdict.signals}
    assert verdict.action in ("defang", "quarantine")


def test_nul_in_charset_does_not_bypass_the_scanner() -> None:
    """A NUL in the declared charset made codecs.lookup raise ValueError (fixed)."""
    message = (b"From: a@example.test\r\nSubject: Verify\r\n"
               + PHISH_BODY.replace(b"text/html", b'text/html; charset="utf-8\x00"'))
    assert _scan(message).action == "quarantine"


# --------------------------------------------------------------------------- actions raising
# Each of these used to raise inside the action; the proxy then fell back to the original with
# verdict headers in front: no Subject prefix, links left live.
def _render(message: bytes, action: Action) -> bytes:
    verdict = dataclasses.replace(_scan(message), action=action)
    out = apply_action(message, verdict, quarantine_id="0" * 16, clock=lambda: 1e9)
    assert out == apply_action(message, verdict, quarantine_id="0" * 16, clock=lambda: 1e9)
    return out


def _parse(data: bytes) -> Message:
    return email.message_from_bytes(data, policy=email.policy.compat32)


def _crlf_only(data: bytes) -> bool:
    bare = data.replace(b"\r\n", b"")
    return b"\r" not in bare and b"\n" not in bare


def _texts(data: bytes) -> list[bytes]:
    payloads = [p.get_payload(decode=True) for p in _parse(data).walk()
                if p.get_content_maintype() == "text"]
    return [p for p in payloads if isinstance(p, bytes)]


def test_tag_survives_a_subject_line_without_colon() -> None:
    """Was: IndexError in headers._prefix_subject (f.split(b":", 1)[1] on "Subject")."""
    message = b"From: a@example.test\r\nSubject\r\n" + OBFUSCATED_LINK
    assert _scan(message).action == "tag"
    out = _render(message, "tag")
    assert out.startswith(b"X-Popproxy-Verdict: tag")
    # The added Subject comes before the colon-less line, where a strict parser stops reading
    # headers, so every client shows the prefix.
    assert _parse(out)["Subject"] == "[SUSPICIOUS]"
    assert out.endswith(b"\r\nSubject\r\n" + OBFUSCATED_LINK)  # the rest as it was


def test_tag_moves_a_subject_behind_a_malformed_line_up() -> None:
    message = b"From: a@example.test\r\nJunk line\r\nSubject: Verify\r\n" + OBFUSCATED_LINK
    out = _render(message, "tag")
    assert _parse(out)["Subject"] == "[SUSPICIOUS] Verify"
    assert out.count(b"Subject:") == 1


def test_defang_survives_8bit_content_type() -> None:
    """Was: TypeError in defang._rewrite_part (set_param on an 8-bit Content-Type, which
    compat32 returns as an email.header.Header)."""
    message = (b"From: a@example.test\r\nSubject: hi\r\n"
               b'Content-Type: text/plain; name="caf\xc3\xa9.txt"\r\n'
               + OBFUSCATED_LINK + b"caf\xc3\xa9\r\n")
    out = _render(message, "defang")
    assert b"hxxp://0x7f[.]0[.]0[.]1/login" in out and b"http://" not in out
    assert b'Content-Type: text/plain; charset="utf-8"; name="caf\xc3\xa9.txt"\r\n' in out
    assert _texts(out) == [b"Log in at hxxp://0x7f[.]0[.]0[.]1/login today\r\ncaf\xc3\xa9\r\n"]
    assert _crlf_only(out)


def test_defang_survives_8bit_multipart_without_boundary() -> None:
    """Was: UnicodeEncodeError in defang_message (BytesGenerator writes the unsplit body of a
    boundary-less multipart as ASCII).  It is now also scanned: the link is found."""
    message = (b"From: a@example.test\r\nSubject: hi\r\nContent-Type: multipart/mixed\r\n"
               + OBFUSCATED_LINK + b"Gr\xc3\xbc\xc3\x9fe\r\n")
    assert _scan(message).action == "tag"  # was "pass": the body was never looked at
    out = _render(message, "defang")
    msg = _parse(out)
    assert msg.get_content_type() == "text/plain" and not msg.defects
    assert msg.get_payload(decode=True) == (
        "Log in at hxxp://0x7f[.]0[.]0[.]1/login today\r\nGrüße\r\n".encode())

    assert _crlf_only(out)


def test_defang_survives_a_file_separator_in_a_header() -> None:
    """Was: HeaderParseError in defang_message (compat32 re-folds headers with Header.encode,
    which splits at \\x1c and refuses "X-Note:" as an embedded header).  Headers are now
    written as they came."""
    message = b"From: a@example.test\r\nSubject: invoice\x1cX-Note: paid\r\n" + OBFUSCATED_LINK
    out = _render(message, "defang")
    assert b"\r\nSubject: [SUSPICIOUS] invoice\x1cX-Note: paid\r\n" in out
    assert b"hxxp://0x7f[.]0[.]0[.]1/login" in out and b"http://" not in out
    assert _crlf_only(out)


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
