"""``header_length``: how many bytes of a connection are its PROXY header, byte by byte too."""

from __future__ import annotations

import pytest

from popproxy.wire.proxyproto import MAX_V1_HEADER, V2_SIGNATURE, decode_header
from popproxy.wire.proxyproto_length import header_length

V1 = b"PROXY TCP4 192.0.2.1 198.51.100.2 40000 110\r\n"
# v2 PROXY over TCP/IPv4 (PP section 2.2): 12 address bytes, then one NOOP TLV of 3 bytes.
V2 = V2_SIGNATURE + b"\x21\x11\x00\x0f" + bytes([192, 0, 2, 1, 198, 51, 100, 2]) + (
    b"\x9c\x40\x00\x6e") + b"\x04\x00\x00"


@pytest.mark.parametrize("header", [V1, V2])
def test_length_known_exactly_when_the_header_shows_it(header: bytes) -> None:
    decoded, rest = decode_header(header + b"\x16\x03\x01")  # the parser agrees on the end
    assert rest == b"\x16\x03\x01" and decoded.command == "PROXY"
    known = V2_SIGNATURE.__len__() + 4 if header is V2 else len(header)
    for size in range(len(header) + 4):  # byte by byte, then with TLS bytes after it
        prefix = (header + b"\x16\x03\x01")[:size]
        expected = len(header) if size >= known else None
        assert header_length(prefix) == expected, size


def test_v2_length_is_the_announced_one_even_past_what_the_parser_allows() -> None:
    fixed = V2_SIGNATURE + b"\x21\x11\xff\xff"
    assert header_length(fixed) == 16 + 65535


def test_v1_crlf_after_the_107_byte_limit_is_not_looked_for() -> None:
    line = b"PROXY UNKNOWN " + b"x" * MAX_V1_HEADER + b"\r\n"
    assert header_length(line) is None
    assert header_length(b"PROXY UNKNOWN\r\n") == 15


@pytest.mark.parametrize("data", [b"", b"PROX", b"USER alice\r\n", b"\x16\x03\x01\x02\x00"])
def test_no_header_or_not_yet_one_gives_none(data: bytes) -> None:
    assert header_length(data) is None
