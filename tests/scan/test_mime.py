"""The bounded MIME walk and the decoding boundary: QP, base64, RFC 2047, charsets, nesting."""

from __future__ import annotations

import base64
import time

from popproxy.scan import ScanSettings
from popproxy.scan.mime import WalkStats, walk_parts
from popproxy.scan.mime_parse import parse_message
from tests.scan.helpers import load, names, scan
from tests.scan.test_header_words import ALTERNATING, DECODE_SECONDS


def _parts(data: bytes, **limits: int) -> tuple[list[str], WalkStats]:
    stats = WalkStats()
    kwargs = {"max_depth": 16, "max_parts": 100, "max_decoded_bytes": 10**7} | limits
    parts = walk_parts(parse_message(data), stats=stats, checkpoint=lambda: None, **kwargs)
    return [p.content_type for p in parts], stats


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
    # Past the depth limit the part is still judged (by the overflow walk), and the limit is
    # evidence of its own (tests/scan/test_limit_bypass.py has the attacks).
    types, stats = _parts(_nested(5), max_depth=3)
    assert types == ["text/plain"] and stats.overflow_parts == 1
    assert stats.limits_hit == ["depth"]
    verdict = scan(_nested(5), ScanSettings(max_mime_depth=3))
    assert {"limit-depth", "link-ip-host"} <= names(verdict)


def test_part_and_byte_limits() -> None:
    _, stats = _parts(load("nested_forward.eml"), max_parts=2)
    assert "parts" in stats.limits_hit
    _, stats = _parts(load("attach_exe.eml"), max_decoded_bytes=10)
    assert "decoded-bytes" in stats.limits_hit


# --------------------------------------------------------------------------- no usable boundary
HIDDEN_HTML = (  # base64 of an HTML part: only a parser that finds the part can see the link
    b"Content-Type: text/html\r\nContent-Transfer-Encoding: base64\r\n\r\n"
    + base64.encodebytes(b'<a href="http://198.51.100.7/login">https://www.paypal.com/</a>'
                         b'<form action="http://198.51.100.7/p"><input type=password></form>')
)


def _broken(content_type: bytes, body: bytes) -> bytes:
    return (b"From: a@example.test\r\nSubject: hi\r\nMIME-Version: 1.0\r\nContent-Type: "
            + content_type + b"\r\n\r\n" + body)


def test_multipart_without_boundary_is_scanned_as_text() -> None:
    """Evasion: a multipart without a boundary parameter was never looked inside."""
    message = _broken(b"multipart/mixed", b"Log in at http://198.51.100.7/login now\r\n")
    types, stats = _parts(message)
    assert types == ["text/plain"] and stats.malformed == ["no-boundary"]
    verdict = scan(message)
    assert {"link-ip-host", "mime-malformed"} <= names(verdict)
    assert "mime-malformed (no-boundary)" in verdict.reasons


def test_multipart_with_unusable_boundary_has_its_parts_recovered() -> None:
    """Evasion: the parts of a multipart whose boundary never occurs (here an unclosed quote,
    as in phish_0075 of the corpus) were never scanned; a lenient client still shows them."""
    body = (b"--xyz\r\nContent-Type: text/plain\r\n\r\nHello\r\n--xyz\r\n"
            + HIDDEN_HTML + b"--xyz--\r\n")

    for content_type in (b'multipart/mixed; boundary="xyz', b"multipart/mixed; boundary=abc",
                         b"multipart/alternative"):
        message = _broken(content_type, body)
        types, stats = _parts(message)
        assert types == ["text/plain", "text/plain", "text/html"], content_type
        assert stats.malformed == ["no-boundary"]
        verdict = scan(message)
        assert verdict.action == "quarantine", (content_type, verdict)
        assert {"form-password", "link-text-mismatch-brand", "mime-malformed"} <= names(verdict)


def test_recovered_parts_count_against_the_limits() -> None:
    message = _broken(b"multipart/mixed", b"--x\r\n\r\nhttp://198.51.100.7/\r\n" * 50)
    types, stats = _parts(message, max_parts=10)
    assert stats.parts == 10 and "parts" in stats.limits_hit
    # The other 41 go to the overflow walk, which a byte budget bounds (not the part count).
    assert len(types) == 51 and stats.overflow_parts == 41
    types, stats = _parts(message, max_parts=10, max_overflow_bytes=5 * 1024)
    assert stats.overflow_parts == 5 and "overflow" in stats.limits_hit
    levels = b"".join(b"--a%d\r\nContent-Type: multipart/mixed\r\n\r\n" % i for i in range(40))
    _, stats = _parts(_broken(b"multipart/mixed", levels), max_depth=5)
    assert stats.parts == 6 and "depth" in stats.limits_hit



def test_extension_after_long_encoded_filename_is_judged() -> None:
    name = f"{ALTERNATING} =?utf-8?q?invoice.exe?="
    message = (
        "From: a@b.example\r\nSubject: x\r\nMIME-Version: 1.0\r\n"
        "Content-Type: application/octet-stream\r\n"
        f'Content-Disposition: attachment; filename="{name}"\r\n\r\nhello\r\n'
    ).encode()
    start = time.perf_counter()
    verdict = scan(message)
    assert time.perf_counter() - start < DECODE_SECONDS + 1.0
    assert "attach-risky-ext" in names(verdict)


def test_unknown_charset_word_does_not_hide_the_extension() -> None:
    # make_header refuses the whole value for one word in a made-up charset; the file name was
    # then judged raw, ending in "?=", and an .exe passed as an unknown extension.
    message = (
        b"From: a@b.example\r\nSubject: x\r\nMIME-Version: 1.0\r\n"
        b"Content-Type: application/octet-stream\r\n"
        b'Content-Disposition: attachment; filename="=?x?q?a?= =?utf-8?q?invoice.exe?="\r\n'
        b"\r\nhello\r\n"
    )
    assert "attach-risky-ext" in names(scan(message))
