"""The defang at a size the client was already told: same octets, links inert, or None
(then the caller quarantines; never the original as if clean)."""

from __future__ import annotations

import base64

from popproxy.pop3.framing import Unstuffer, stuff_body
from popproxy.scan.mime_parse import parse_message
from popproxy.scan.sized_defang import sized_defang

PLAIN = (b"From: a@example.test\r\nSubject: verify\r\n\r\n"
         b"Log in at https://evil.example/login\r\n"
         b".hidden line starting with a dot http://198.51.100.7/x\r\n"
         b"..\r\n.\r\n")

HTML_B64 = base64.encodebytes(
    b'<p>Pay <a href="https://paypal.evil.example/">https://www.paypal.com/</a></p>\n' * 3
).replace(b"\n", b"\r\n")

MULTI = (b"From: a@example.test\r\nMIME-Version: 1.0\r\n"
         b'Content-Type: multipart/alternative; boundary="b1"\r\n\r\n'
         b"preamble\r\n--b1\r\nContent-Type: text/plain; charset=utf-8\r\n"
         b"Content-Transfer-Encoding: quoted-printable\r\n\r\n"
         b"Go to https://evil=\r\n.example/p =E2=9C=93\r\n"
         b"--b1\r\nContent-Type: text/html\r\nContent-Transfer-Encoding: base64\r\n\r\n"
         + HTML_B64 +
         b"--b1\r\nContent-Type: image/png\r\nContent-Transfer-Encoding: base64\r\n\r\n"
         b"iVBORw0KGgo=\r\n--b1--\r\nepilogue\r\n")


def _links(message: bytes) -> str:
    """Every text part's decoded content, as a reader's client would show it."""
    out = []
    for part in parse_message(message).walk():
        if part.get_content_maintype() == "text":
            payload = part.get_payload(decode=True)
            assert isinstance(payload, bytes)
            out.append(payload.decode("utf-8", "replace"))
    return "".join(out)


def test_plain_text_keeps_its_length_and_dot_lines() -> None:
    out = sized_defang(PLAIN)
    assert out is not None and len(out) == len(PLAIN)
    assert b"hxxps://evil_example/login" in out and b"hxxp://198_51_100_7/x" in out
    # The lines starting with "." are still there, so stuffing on the wire is as for the
    # original: the client unstuffs exactly len(PLAIN) octets.
    wire = stuff_body(out)
    assert wire.count(b"\r\n..") == stuff_body(PLAIN).count(b"\r\n..")
    assert len(Unstuffer().feed(wire[:-3])) == len(PLAIN)


def test_multipart_parts_are_edited_in_their_transfer_encoding() -> None:
    out = sized_defang(MULTI)
    assert out is not None and len(out) == len(MULTI)
    shown = _links(out)
    assert "https" not in shown and "http:" not in shown and "href" not in shown
    assert "evil_example" in shown and "www_paypal_com" in shown and "\u2713" in shown
    # Boundaries, headers, preamble, epilogue and the image keep every byte.
    assert out.split(b"--b1")[0] == MULTI.split(b"--b1")[0]
    assert out.endswith(b"--b1--\r\nepilogue\r\n") and b"iVBORw0KGgo=" in out


def test_lf_only_message_keeps_its_length() -> None:
    message = PLAIN.replace(b"\r\n", b"\n")
    out = sized_defang(message)
    assert out is not None and len(out) == len(message) and b"https" not in out


def test_what_cannot_be_edited_in_place_is_refused() -> None:
    no_boundary = b"Content-Type: multipart/mixed\r\n\r\nhttps://evil.example/\r\n"
    uuencoded = (b"Content-Type: text/plain\r\nContent-Transfer-Encoding: x-uuencode\r\n\r\n"
                 b"begin 644 x\r\n")
    odd_base64 = (b"Content-Type: text/html\r\nContent-Transfer-Encoding: base64\r\n\r\n"
                  b"aGl=\r\n")
    utf16 = (b"Content-Type: text/plain; charset=utf-16\r\n\r\n"
             + "https://evil.example/".encode("utf-16"))
    html_attachment = (b'Content-Type: multipart/mixed; boundary="x"\r\n\r\n--x\r\n'
                       b"Content-Type: application/octet-stream\r\n"
                       b'Content-Disposition: attachment; filename="invoice.html"\r\n\r\n'
                       b"<script>location='https://evil.example'</script>\r\n--x--\r\n")
    for message in (no_boundary, uuencoded, odd_base64, utf16, html_attachment):
        assert sized_defang(message) is None, message


def test_nesting_past_the_limit_is_refused() -> None:
    message = b"x\r\n"
    for level in range(40):
        head = b'Content-Type: multipart/mixed; boundary="b%d"\r\n\r\n--b%d\r\n'
        message = (head % (level, level) + message + b"\r\n--b%d--\r\n" % level)
    assert sized_defang(message) is None
