"""The bounded MIME walk and the decoding boundary: QP, base64, RFC 2047, charsets, nesting."""

from __future__ import annotations

from popproxy.scan import ScanConfig
from popproxy.scan.mime import WalkStats, header_text, parse_message, walk_parts
from popproxy.scan.textdecode import decode_bytes
from tests.scan.helpers import load, names, scan


def _parts(data: bytes, **limits: int) -> tuple[list[str], WalkStats]:
    stats = WalkStats()
    kwargs = {"max_depth": 16, "max_parts": 100, "max_decoded_bytes": 10**7} | limits
    parts = walk_parts(parse_message(data), stats=stats, checkpoint=lambda: None, **kwargs)
    return [p.content_type for p in parts], stats


def test_rfc2047_subject() -> None:
    msg = parse_message(load("qp_ip_link.eml"))
    assert header_text(msg, "Subject") == "Konto gesperrt \u2013 bitte bestätigen"
    assert header_text(msg, "X-Missing") == ""


def test_broken_encoded_word_does_not_raise() -> None:
    msg = parse_message(b"Subject: =?x-unknown-charset?B?SGk=?= there\r\n\r\nbody\r\n")
    assert "there" in header_text(msg, "Subject")


def test_quoted_printable_body_is_decoded() -> None:
    verdict = scan(load("qp_ip_link.eml"))
    assert {"link-ip-host", "lure-credentials", "lure-urgency"} <= names(verdict)


def test_nested_multipart_and_forwarded_message() -> None:
    types, stats = _parts(load("nested_forward.eml"))
    assert types == ["text/plain", "text/html", "text/html"]
    assert stats.limits_hit == []
    assert "link-userinfo-host" in names(scan(load("nested_forward.eml")))


def _nested(depth: int) -> bytes:
    head = b"From: a@example.org\r\nSubject: deep\r\nMIME-Version: 1.0\r\n"
    body = b"Content-Type: text/plain\r\n\r\nhttp://198.51.100.7/\r\n"
    for i in range(depth):
        b = f"b{i}".encode()
        body = (
            b"Content-Type: multipart/mixed; boundary=\"" + b + b"\"\r\n\r\n--" + b + b"\r\n"
            + body + b"\r\n--" + b + b"--\r\n"
        )
    return head + body


def test_depth_limit() -> None:
    types, stats = _parts(_nested(5), max_depth=3)
    assert types == []
    assert stats.limits_hit == ["depth"]
    verdict = scan(_nested(5), ScanConfig(max_mime_depth=3))
    assert "mime-limits" in names(verdict)


def test_part_and_byte_limits() -> None:
    _, stats = _parts(load("nested_forward.eml"), max_parts=2)
    assert "parts" in stats.limits_hit
    _, stats = _parts(load("attach_exe.eml"), max_decoded_bytes=10)
    assert "decoded-bytes" in stats.limits_hit


def test_charset_fallbacks() -> None:
    assert decode_bytes("Grüße".encode("cp1252"), "no-such-charset") == "Grüße"
    assert decode_bytes("Grüße".encode(), None) == "Grüße"
    assert decode_bytes("Grüße".encode("cp1252"), "utf-8") == "Grüße"
    assert decode_bytes(b"\x81\xff", "unknown-8bit")  # never raises
