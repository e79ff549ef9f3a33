"""Equal-length link defanging of text, quoted-printable and base64 (issue 17, listing budget)."""

from __future__ import annotations

import base64
import quopri

from popproxy.scan.sized_links import defang_base64, defang_qp, defang_text


def test_text_links_become_inert_at_the_same_length() -> None:
    text = b"See https://evil.example/login or www.phish.example.test now, ftp://files.example/x\r\n"
    out = defang_text(text, html=False)
    assert len(out) == len(text)
    assert out == (b"See hxxps://evil_example/login or www_phish_example_test now, "
                   b"fxp://files_example/x\r\n")


def test_html_attributes_that_navigate_are_renamed() -> None:
    html = (b'<a href="h&#116;tps://evil.example/">x</a><img src=//cdn.example/p.png>'
            b'<form action="/p"><div style="background:url(//x.example/i)">')
    out = defang_text(html, html=True)
    assert len(out) == len(html)
    assert b"href" not in out and b" src=" not in out and b"action=" not in out
    assert b"xref=" in out and b"ur_(" in out and b"cdn_example" in out


def test_quoted_printable_is_edited_in_its_encoded_form() -> None:
    # A soft line break (RFC 2045 s6.7) inside the URL's host, an encoded "=" and a dot.
    raw = b"Click https://ev=\r\nil.example/login now =3D www=2Eevil.example\r\n"
    out = defang_qp(raw, html=False)
    assert len(out) == len(raw)
    assert quopri.decodestring(out) == defang_text(quopri.decodestring(raw), html=False)
    assert quopri.decodestring(out) == (b"Click hxxps://evil_example/login now = "
                                        b"www_evil_example\r\n")


def test_an_encoded_byte_stays_encoded() -> None:
    raw = b"http:=2F=2Fevil=2Eexample/\r\n"
    out = defang_qp(raw, html=False)
    assert out == b"hxxp:=2F=2Fevil=5Fexample/\r\n"


def test_base64_is_re_encoded_into_the_same_layout() -> None:
    decoded = b"<a href='https://evil.example/x'>pay</a>\r\n" * 5
    encoded = base64.encodebytes(decoded).replace(b"\n", b"\r\n")
    out = defang_base64(encoded, html=True)
    assert out is not None and len(out) == len(encoded)
    assert [len(line) for line in out.split(b"\r\n")] == [len(line) for line in
                                                          encoded.split(b"\r\n")]
    assert base64.b64decode(out) == defang_text(decoded, html=True)


def test_non_canonical_base64_is_refused() -> None:
    assert defang_base64(b"aGk=\r\n!!garbage\r\n", html=False) is None
    assert defang_base64(b"aGl=\r\n", html=False) is None  # non-zero padding bits
