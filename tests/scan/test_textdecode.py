"""Body text decoding: declared charset first, then fallbacks; it never raises."""

from __future__ import annotations

from popproxy.scan.textdecode import decode_bytes


def test_charset_fallbacks() -> None:
    assert decode_bytes("Grüße".encode("cp1252"), "no-such-charset") == "Grüße"
    assert decode_bytes("Grüße".encode(), None) == "Grüße"
    assert decode_bytes("Grüße".encode("cp1252"), "utf-8") == "Grüße"
    assert decode_bytes(b"\x81\xff", "unknown-8bit")  # never raises


def test_charset_names_are_matched_like_mail_clients_do() -> None:
    assert decode_bytes("Grüße".encode("latin-1"), "ISO-8859-1") == "Grüße"
    assert decode_bytes(b"plain", "us-ascii") == "plain"
