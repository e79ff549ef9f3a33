"""Header values as text: RFC 2047 encoded-words decoded within a bounded length.

Moved from test_mime.py, with direct tests of the head/tail cuts.
"""

from __future__ import annotations

import time

from popproxy.scan.header_words import decodable_tail, decode_words, header_text
from popproxy.scan.limits import MAX_HEADER_DECODE_CHARS
from popproxy.scan.mime_parse import parse_message
from tests.scan.helpers import load

# email.header.decode_header is quadratic when charsets alternate (260 KB: 2.7 s, 1 MB: ~40 s);
# header values are decoded from their first (file names: last) MAX_HEADER_DECODE_CHARS.
ALTERNATING = " ".join("=?utf-8?q?a?= x" if i % 2 else "=?x?q?a?=" for i in range(80_000))
DECODE_SECONDS = 1.0  # ~0.03 s measured; the 1 MB value took ~40 s before the cap


def test_rfc2047_subject() -> None:
    msg = parse_message(load("qp_ip_link.eml"))
    assert header_text(msg, "Subject") == "Konto gesperrt \u2013 bitte bestätigen"
    assert header_text(msg, "X-Missing") == ""


def test_broken_encoded_word_does_not_raise() -> None:
    msg = parse_message(b"Subject: =?x-unknown-charset?B?SGk=?= there\r\n\r\nbody\r\n")
    assert "there" in header_text(msg, "Subject")


def test_long_alternating_encoded_subject_decodes_quickly() -> None:
    message = f"From: a@b.example\r\nSubject: {ALTERNATING} tail\r\n\r\nhi\r\n".encode()
    msg = parse_message(message)
    start = time.perf_counter()
    subject = header_text(msg, "Subject")
    assert time.perf_counter() - start < DECODE_SECONDS
    assert subject.startswith("aa x aa x")  # decoded, not the raw encoded-words
    assert len(subject) <= MAX_HEADER_DECODE_CHARS


def test_plain_values_pass_through() -> None:
    assert decode_words("no encoded words here") == "no encoded words here"
    assert decode_words("=?utf-8?q?Gr=C3=BC=C3=9Fe?=") == "Grüße"


def test_a_word_in_an_unknown_charset_does_not_hide_the_rest() -> None:
    # make_header refuses the whole value for one unknown charset; the rest must still decode.
    assert decode_words("=?x?q?a?= =?utf-8?q?invoice.exe?=").endswith("invoice.exe")


def test_the_tail_of_a_long_value_keeps_its_end_whole() -> None:
    long_name = "x " * MAX_HEADER_DECODE_CHARS + "=?utf-8?q?invoice.exe?="
    tail = decodable_tail(long_name)
    assert len(tail) <= MAX_HEADER_DECODE_CHARS
    assert tail.endswith("=?utf-8?q?invoice.exe?=") and not tail.startswith(" ")
    assert decodable_tail("short.pdf") == "short.pdf"
