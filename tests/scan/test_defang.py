"""The defang action on whole messages: every text part made inert, the MIME structure
written back deterministically (POP3: LIST size == RETR size).  The HTML tree defang is
tested in test_defang_html.py; the other actions in test_actions.py."""

from __future__ import annotations

import base64
from email.message import Message

from popproxy.scan.defang import defang_message
from tests.scan.helpers import build
from tests.scan.test_actions import CLICKABLE, _assert_linear, _parse, _texts


def test_defang_keeps_attachments_and_structure() -> None:
    data = build(
        text="go to https://evil.example/x",
        html='<a href="https://evil.example/x">here</a>',
        attachments=(("a.bin", b"\x00\x01binary", "application/octet-stream"),),
    )
    msg = _parse(defang_message(data))
    types = [p.get_content_type() for p in msg.walk()]
    assert types == [
        "multipart/mixed", "multipart/alternative", "text/plain", "text/html",
        "application/octet-stream",
    ]
    attachment = list(msg.walk())[-1]
    assert attachment.get_payload(decode=True) == b"\x00\x01binary"
    assert "hxxps://evil[.]example/x" in _texts(msg)[0]


def test_defang_non_ascii_text_stays_readable() -> None:
    data = build(text="Grüße — https://évil.example/ ✓")
    text = _texts(_parse(defang_message(data)))[0]
    assert "Grüße" in text and "hxxps://évil[.]example/" in text


def _defang_twice(data: bytes) -> bytes:
    out = defang_message(data)
    assert out == defang_message(data)  # POP3: LIST size == RETR size
    bare = out.replace(b"\r\n", b"")
    assert b"\r" not in bare and b"\n" not in bare
    return out


def _clickable(msg: Message) -> list[str]:
    return [t for t in _texts(msg) if CLICKABLE.search(t)]


def test_defang_rebuilds_a_multipart_without_usable_boundary() -> None:
    """The parts a lenient client finds behind a broken boundary are defanged like any others
    and written under a boundary of ours, so every client sees the same defanged parts."""
    html = base64.encodebytes(b'<a href="http://198.51.100.7/login">Sign in</a>')
    data = (b"From: a@example.org\r\nSubject: x\r\nContent-Type: multipart/mixed; boundary=\"b1"
            b"\r\nContent-Transfer-Encoding: 7bit\r\n\r\n"
            b"--b1\r\nContent-Type: text/plain\r\n\r\nsee https://evil.example/x\r\n"
            b"--b1\r\nContent-Type: text/html\r\nContent-Transfer-Encoding: base64\r\n\r\n"
            + html + b"--b1--\r\n")
    out = _defang_twice(data)
    msg = _parse(out)
    assert [p.get_content_type() for p in msg.walk()] == [
        "multipart/mixed", "text/plain", "text/html"]
    assert str(msg.get_boundary()).startswith("=_popproxy_") and not msg.defects
    assert msg["Content-Transfer-Encoding"] is None
    assert not _clickable(msg)
    assert "[hxxp://198[.]51[.]100[.]7/login]" in _texts(msg)[1]


def test_defang_turns_an_unsplittable_multipart_into_text() -> None:
    data = b"From: a@example.org\r\nContent-Type: multipart/related\r\n\r\nhttps://evil.example/\r\n"
    msg = _parse(_defang_twice(data))
    assert msg.get_content_type() == "text/plain" and msg.get_content_charset() == "utf-8"
    assert _texts(msg) == ["hxxps://evil[.]example/\r\n"]


def test_defang_keeps_a_decoded_delimiter_inside_its_part() -> None:
    """Attack: a QP text part whose decoded text holds "--b1" and a base64 HTML part after
    it.  Re-encoded as plain QP, that line became a real delimiter and the hidden HTML part
    (links live: defang had treated it as text) appeared after defanging."""
    hidden = base64.b64encode(b'<a href="http://198.51.100.7/login">Sign in</a>')
    data = (b"From: a@example.org\r\nContent-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n"
            b"--b1\r\nContent-Type: text/plain\r\nContent-Transfer-Encoding: quoted-printable"
            b"\r\n\r\nhello\r\n=2D-b1\r\nContent-Type: text/html\r\n"
            b"Content-Transfer-Encoding: base64\r\n\r\n" + hidden + b"\r\n--b1--\r\n")
    msg = _parse(_defang_twice(data))
    assert [p.get_content_type() for p in msg.walk()] == ["multipart/mixed", "text/plain"]
    assert _texts(msg)[0].startswith("hello\r\n--b1\r\n")


def test_defang_is_deterministic_with_an_empty_boundary() -> None:
    """boundary="" made BytesGenerator pick a random boundary: LIST and RETR sizes differed."""
    data = (b"From: a@example.org\r\nContent-Type: multipart/mixed; boundary=\"\"\r\n\r\n"
            b"--\r\nContent-Type: text/plain\r\n\r\nhttp://evil.example/\r\n--\r\n")
    msg = _parse(_defang_twice(data))
    assert str(msg.get_boundary()).startswith("=_popproxy_")
    assert not _clickable(msg) and "hxxp://evil[.]example/" in _texts(msg)[0]


def test_defang_writes_crlf_and_keeps_headers_as_they_came() -> None:
    long_subject = "word " * 30
    data = (f"From: a@example.org\nSubject: {long_subject}\nX-Folded: a\n\tb\n\n"
            "go to http://evil.example/\n").encode()
    out = _defang_twice(data)
    assert f"Subject: {long_subject}\r\nX-Folded: a\r\n\tb\r\n".encode() in out  # not re-folded
    assert _texts(_parse(out)) == ["go to hxxp://evil[.]example/\r\n"]


def test_defang_survives_deep_nesting() -> None:
    """The stdlib generator recursed once per level and raised RecursionError at ~400."""
    body = b"Content-Type: text/plain\r\n\r\nhttp://198.51.100.7/\r\n"
    for i in range(400):
        b = f"b{i}".encode()
        body = (b"Content-Type: multipart/mixed; boundary=\"" + b + b"\"\r\n\r\n--" + b + b"\r\n"
                + body + b"\r\n--" + b + b"--\r\n")
    out = _defang_twice(b"From: a@example.org\r\n" + body)
    assert b"hxxp://198[.]51[.]100[.]7/" in out and b"http://" not in out


def test_defang_keeps_only_the_content_type_the_scanner_read() -> None:
    """A second Content-Type (or transfer encoding) could make a client that reads the last
    one decode a part differently from the scanner and find links nobody defanged."""
    hidden = base64.b64encode(b'<a href="http://198.51.100.7/login">Sign in</a>')
    data = (b"From: a@example.org\r\nContent-Type: application/octet-stream\r\n"
            b"Content-Transfer-Encoding: 7bit\r\nContent-Type: text/html\r\n"
            b"Content-Transfer-Encoding: base64\r\n\r\n" + hidden + b"\r\n")
    out = _defang_twice(data)
    assert out.count(b"Content-Type:") == 1 and out.count(b"Content-Transfer-Encoding:") == 1
    assert b"Content-Type: application/octet-stream\r\n" in out
    assert b"Content-Transfer-Encoding: 7bit\r\n" in out


def test_defang_with_a_huge_quoted_content_type_parameter_is_linear() -> None:
    """Attack: a Content-Type whose quoted parameter holds 320,000 semicolons.  The stdlib's
    parameter splitter (behind get_content_charset, get_boundary, get_filename) counted the
    quotes again for every semicolon: 40 KB took 2.3 s per call."""

    def message(n: int) -> bytes:
        return (b'From: a@example.org\r\nContent-Type: text/html; charset="x-bogus"; x="'
                + b";" * n + b'"\r\n\r\n<a href="http://evil.example/">x</a>\r\n')

    large = message(320_000)
    _assert_linear(defang_message, message(80_000), large)
    assert not _clickable(_parse(_defang_twice(large)))
