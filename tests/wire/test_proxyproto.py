"""PROXY protocol v1/v2 decoder (HAProxy "The PROXY protocol, Versions 1 & 2").

Every input goes through each feed (whole, one byte at a time, seeded random splits) and must
give the same header, the same trailing bytes, or the same error class.  Headers are built with
the small test-only encoder below.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address, ip_address
from typing import Literal, cast

import pytest
from hypothesis import given
from hypothesis import strategies as st

from popproxy.policy.decisions import unmapped
from popproxy.wire.proxyproto import (
    MAX_UNIQUE_ID,
    MAX_V1_HEADER,
    MAX_V2_PAYLOAD,
    NEED_DATA,
    PP2_TYPE_ALPN,
    PP2_TYPE_AUTHORITY,
    PP2_TYPE_CRC32C,
    PP2_TYPE_NETNS,
    PP2_TYPE_NOOP,
    PP2_TYPE_SSL,
    PP2_TYPE_UNIQUE_ID,
    V1_SIGNATURE,
    V2_SIGNATURE,
    NotProxyProtocolError,
    ProxyHeader,
    ProxyHeaderParser,
    ProxyProtocolError,
    TruncatedHeaderError,
    UnsupportedAddressError,
    V1HeaderTooLongError,
    V1MalformedError,
    V2AddressBlockError,
    V2CommandError,
    V2LengthError,
    V2TlvError,
    V2VersionError,
    crc32c,
    decode_header,
)
from tests.support.feeds import FEED_IDS, FEEDS, Feed, bytewise, split_at, whole


@pytest.fixture(params=FEEDS, ids=FEED_IDS)
def feed(request: pytest.FixtureRequest) -> Feed:
    return cast(Feed, request.param)


@dataclass(frozen=True)
class Outcome:
    header: ProxyHeader | None
    remaining: bytes
    error: type[ProxyProtocolError] | None
    fed: int  # bytes handed to the parser when the header or the error appeared


def run(data: bytes, feed: Feed, *, eof: bool = False) -> Outcome:
    """Feed ``data``, pulling an event after every chunk; keep feeding after the header."""
    parser = ProxyHeaderParser()
    header, fed, at = None, 0, 0
    chunks = [*feed(data), b""] if eof else feed(data)
    for chunk in chunks:
        parser.receive_data(chunk)
        fed += len(chunk)
        if header is not None:
            continue
        try:
            event = parser.next_event()
        except ProxyProtocolError as exc:
            return Outcome(None, b"", type(exc), fed)
        if isinstance(event, ProxyHeader):
            header, at = event, fed
        else:
            assert event is NEED_DATA
    return Outcome(header, parser.remaining() if header else b"", None, at)


def expect_error(data: bytes, feed: Feed, error: type[ProxyProtocolError]) -> Outcome:
    outcome = run(data, feed, eof=True)
    assert outcome.error is error, outcome
    return outcome


# ------------------------------------------------------------------ test-only encoder


def v1(proto: str, src: str, dst: str, sport: object, dport: object) -> bytes:
    return f"PROXY {proto} {src} {dst} {sport} {dport}\r\n".encode()


def tlv(tlv_type: int, value: bytes) -> bytes:
    return bytes([tlv_type]) + len(value).to_bytes(2, "big") + value


def inet(src: str, dst: str, sport: int, dport: int) -> bytes:
    ports = sport.to_bytes(2, "big") + dport.to_bytes(2, "big")
    return ip_address(src).packed + ip_address(dst).packed + ports


def v2(
    block: bytes = b"",
    tlvs: Sequence[tuple[int, bytes]] = (),
    *,
    command: int = 0x1,
    family: int = 0x11,
    version: int = 2,
    length: int | None = None,
    crc: bool = False,
) -> bytes:
    body = block + b"".join(tlv(t, v) for t, v in tlvs) + (tlv(PP2_TYPE_CRC32C, bytes(4)) * crc)
    size = len(body) if length is None else length
    fixed = V2_SIGNATURE + bytes([version << 4 | command, family]) + size.to_bytes(2, "big")
    header = fixed + body
    if crc:
        header = header[:-4] + crc32c(header).to_bytes(4, "big")
    return header


V4_BLOCK = inet("192.0.2.1", "198.51.100.2", 51234, 995)
V6_BLOCK = inet("2001:db8::1", "2001:db8::2", 40000, 110)
V4_HEADER = ProxyHeader(
    2, "PROXY", (IPv4Address("192.0.2.1"), 51234), (IPv4Address("198.51.100.2"), 995)
)
LOCAL_V1 = ProxyHeader(1, "LOCAL", None, None)
LOCAL_V2 = ProxyHeader(2, "LOCAL", None, None)
CLIENT_HELLO = b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"
POP3 = b"USER x\r\n"


def unknown_line(total: int) -> bytes:
    """A valid ``PROXY UNKNOWN <padding>`` line of exactly ``total`` bytes incl. CRLF."""
    line = b"PROXY UNKNOWN " + b"f" * (total - 16) + b"\r\n"
    assert len(line) == total
    return line


# ------------------------------------------------------------------ sanity of the harness


def test_feeds_keep_every_byte_in_order() -> None:
    data = bytes(range(256)) * 2
    for f in [*FEEDS, split_at(3, 3, 700, 10)]:
        assert b"".join(f(data)) == data
        assert all(f(data))
    assert bytewise(b"abc") == [b"a", b"b", b"c"]


def test_crc32c_known_answer() -> None:
    assert crc32c(b"123456789") == 0xE3069283  # RFC 3720 / iSCSI check value
    assert crc32c(b"") == 0


# ------------------------------------------------------------------ version 1


def test_v1_tcp4(feed: Feed) -> None:
    outcome = run(v1("TCP4", "192.0.2.1", "198.51.100.2", 51234, 995) + POP3, feed)
    assert outcome.header == ProxyHeader(
        1, "PROXY", (IPv4Address("192.0.2.1"), 51234), (IPv4Address("198.51.100.2"), 995)
    )
    assert outcome.remaining == POP3


@pytest.mark.parametrize(
    ("src", "dst"),
    [
        ("2001:db8::1", "::"),
        ("2001:0DB8:0000:0000:0000:0000:0000:0001", "FFFF:ffff:FFFF:ffff:FFFF:ffff:FFFF:ffff"),
        ("::1", "fe80::a:b"),
    ],
)
def test_v1_tcp6(feed: Feed, src: str, dst: str) -> None:
    outcome = run(v1("TCP6", src, dst, 0, 65535) + CLIENT_HELLO, feed)
    assert outcome.header == ProxyHeader(
        1, "PROXY", (IPv6Address(src), 0), (IPv6Address(dst), 65535)
    )
    assert outcome.remaining == CLIENT_HELLO


@pytest.mark.parametrize(
    ("line", "client"),
    [  # nginx 1.22 (Debian 12): listen [::]:110 ipv6only=off; proxy_protocol on
        (b"PROXY TCP6 ::ffff:127.0.0.1 ::ffff:127.0.0.1 59074 27110\r\n", "127.0.0.1"),
        # HAProxy 2.6 (Debian 12): bind :::110 v4v6; server ... send-proxy
        (b"PROXY TCP6 ::ffff:127.0.0.2 ::ffff:127.0.0.1 55769 27130\r\n", "127.0.0.2"),
    ],
    ids=["nginx", "haproxy"],
)
def test_v1_tcp6_from_a_dual_stack_listener_accepted(feed: Feed, line: bytes, client: str) -> None:
    """What the balancers sent for an IPv4 client: the mapped address dotted, as glibc's
    inet_ntop writes it.  It was refused as malformed, which dropped every IPv4 client behind
    such a balancer."""
    outcome = run(line + CLIENT_HELLO, feed)
    assert outcome.header is not None and outcome.header.source is not None
    assert outcome.header.source[0] == IPv6Address(f"::ffff:{client}")
    assert unmapped(outcome.header.source[0]) == IPv4Address(client)  # as the policy sees it
    assert outcome.remaining == CLIENT_HELLO


@pytest.mark.parametrize(
    "line",
    [
        b"PROXY UNKNOWN\r\n",
        b"PROXY UNKNOWN ffff::1 ffff::2 65535 65535\r\n",
        b"PROXY UNKNOWN garbage \x00\xff is ignored\r\n",
    ],
)
def test_v1_unknown_means_use_the_socket_address(feed: Feed, line: bytes) -> None:
    outcome = run(line + POP3, feed)
    assert outcome.header == LOCAL_V1
    assert outcome.remaining == POP3


def test_v1_header_of_107_bytes_accepted(feed: Feed) -> None:
    outcome = run(unknown_line(MAX_V1_HEADER) + POP3, feed)
    assert outcome.header == LOCAL_V1
    assert outcome.remaining == POP3


def test_v1_header_over_107_bytes_refused(feed: Feed) -> None:
    """Regression: the v1 line is bounded at 107 bytes (PP section 2.1), CRLF included."""
    expect_error(unknown_line(MAX_V1_HEADER + 1), feed, V1HeaderTooLongError)
    outcome = run(unknown_line(MAX_V1_HEADER + 1) + POP3, bytewise)
    assert outcome.fed == MAX_V1_HEADER  # refused at byte 107, not after more input


def test_v1_endless_line_refused_without_buffering_it(feed: Feed) -> None:
    expect_error(b"PROXY UNKNOWN " + b"x" * 100_000, feed, V1HeaderTooLongError)


V1_MALFORMED = [
    # field count and separators
    b"PROXY TCP4 192.0.2.1 198.51.100.2 1\r\n",
    b"PROXY TCP4 192.0.2.1 198.51.100.2 1 2 3\r\n",
    b"PROXY TCP4 192.0.2.1  198.51.100.2 1 2\r\n",
    b"PROXY TCP4 192.0.2.1 198.51.100.2 1 2 \r\n",
    b"PROXY TCP4\r\n",
    b"PROXY \r\n",
    b"PROXY  TCP4 192.0.2.1 198.51.100.2 1 2\r\n",
    # protocol field
    b"PROXY TCP5 192.0.2.1 198.51.100.2 1 2\r\n",
    b"PROXY tcp4 192.0.2.1 198.51.100.2 1 2\r\n",
    b"PROXY UNKNOWNX\r\n",
    b"PROXY UDP4 192.0.2.1 198.51.100.2 1 2\r\n",
    # addresses that do not match the family or are not canonical
    b"PROXY TCP4 256.0.2.1 198.51.100.2 1 2\r\n",
    b"PROXY TCP4 01.0.2.1 198.51.100.2 1 2\r\n",
    b"PROXY TCP4 192.0.2 198.51.100.2 1 2\r\n",
    b"PROXY TCP4 192.0.2.1. 198.51.100.2 1 2\r\n",
    b"PROXY TCP4 2001:db8::1 198.51.100.2 1 2\r\n",
    b"PROXY TCP6 192.0.2.1 2001:db8::2 1 2\r\n",
    b"PROXY TCP6 fe80::1%eth0 2001:db8::2 1 2\r\n",
    b"PROXY TCP6 ::ffff:192.0.2.01 2001:db8::2 1 2\r\n",
    b"PROXY TCP6 ::ffff:192.0.2 2001:db8::2 1 2\r\n",
    b"PROXY TCP6 ::ffff:192.0.2.1.5 2001:db8::2 1 2\r\n",
    b"PROXY TCP6 1:2:3:4:5:6:7:8:9 2001:db8::2 1 2\r\n",
    b"PROXY TCP6 1::2::3 2001:db8::2 1 2\r\n",
    b"PROXY TCP6 00000::1 2001:db8::2 1 2\r\n",
    b"PROXY TCP4 192.0.2.\xff 198.51.100.2 1 2\r\n",
    b"PROXY TCP4 192.0.2.\x00 198.51.100.2 1 2\r\n",
    # ports
    b"PROXY TCP4 192.0.2.1 198.51.100.2 65536 2\r\n",
    b"PROXY TCP4 192.0.2.1 198.51.100.2 1 99999\r\n",
    b"PROXY TCP4 192.0.2.1 198.51.100.2 0110 2\r\n",
    b"PROXY TCP4 192.0.2.1 198.51.100.2 1 00\r\n",
    b"PROXY TCP4 192.0.2.1 198.51.100.2 -1 2\r\n",
    b"PROXY TCP4 192.0.2.1 198.51.100.2 1 +2\r\n",
    b"PROXY TCP4 192.0.2.1 198.51.100.2 1 655350\r\n",
    b"PROXY TCP6 ::1 ::2 1 ff\r\n",
    # line ends (PP section 2.1: "must not tolerate a single CR or LF")
    b"PROXY UNKNOWN\n",
    b"PROXY TCP4 192.0.2.1 198.51.100.2 1 2\n",
    b"PROXY UNKNOWN\rX\r\n",
    b"PROXY UNKNOWN\r\r\n",
]


@pytest.mark.parametrize("line", V1_MALFORMED)
def test_v1_malformed_refused(feed: Feed, line: bytes) -> None:
    expect_error(line + POP3, feed, V1MalformedError)


def test_v1_leading_zero_port_refused(feed: Feed) -> None:
    """Regression: "Heading zeroes are not permitted" (PP section 2.1), octal confusion."""
    expect_error(v1("TCP4", "192.0.2.1", "198.51.100.2", "0995", 995), feed, V1MalformedError)
    assert run(v1("TCP4", "192.0.2.1", "198.51.100.2", 0, 995), feed).header is not None


def test_v1_ipv6_scope_id_refused(feed: Feed) -> None:
    """Regression: ``ipaddress`` accepts "fe80::1%eth0"; the PROXY line must not."""
    expect_error(v1("TCP6", "fe80::1%eth0", "::1", 1, 2), feed, V1MalformedError)


def test_v1_bare_lf_refused_immediately() -> None:
    """Regression: a lone LF must not end the line, nor be waited past."""
    outcome = run(b"PROXY UNKNOWN\n" + b"x" * 200, bytewise)
    assert outcome.error is V1MalformedError
    assert outcome.fed == len(b"PROXY UNKNOWN\n")


def test_v1_binary_junk_in_tcp4_line_refused_early() -> None:
    outcome = run(b"PROXY TCP4 1\x16" + b"\x00" * 200, bytewise)
    assert outcome.error is V1MalformedError
    assert outcome.fed == len(b"PROXY TCP4 1\x16")


# ------------------------------------------------------------------ version 2


def test_v2_proxy_tcp4(feed: Feed) -> None:
    outcome = run(v2(V4_BLOCK) + CLIENT_HELLO, feed)
    assert outcome.header == V4_HEADER
    assert outcome.remaining == CLIENT_HELLO


def test_v2_proxy_tcp6(feed: Feed) -> None:
    outcome = run(v2(V6_BLOCK, family=0x21) + POP3, feed)
    assert outcome.header == ProxyHeader(
        2, "PROXY", (IPv6Address("2001:db8::1"), 40000), (IPv6Address("2001:db8::2"), 110)
    )
    assert outcome.remaining == POP3


@pytest.mark.parametrize(
    "header",
    [
        v2(command=0x0, family=0x00),
        v2(V4_BLOCK, command=0x0, family=0x11),  # LOCAL: the address block is ignored
        v2(b"\xff" * 216, command=0x0, family=0x31),
        v2(b"junk", command=0x0, family=0x12),
        v2(b"anything at all", [(0xE0, b"x")], command=0x0, family=0x00),
        v2(V4_BLOCK, command=0x1, family=0x00),  # PROXY over AF_UNSPEC
    ],
)
def test_v2_local_means_use_the_socket_address(feed: Feed, header: bytes) -> None:
    outcome = run(header + POP3, feed)
    assert outcome.header == LOCAL_V2
    assert outcome.remaining == POP3


def test_v2_tlvs_known_and_unknown_kept_in_order(feed: Feed) -> None:
    ssl_value = b"\x01" + bytes(4) + tlv(0x21, b"TLSv1.3") + tlv(0x22, b"client.example")
    tlvs = [
        (PP2_TYPE_ALPN, b"pop3"),
        (PP2_TYPE_AUTHORITY, b"mail.example.com"),
        (PP2_TYPE_NOOP, b""),
        (PP2_TYPE_UNIQUE_ID, b"u" * MAX_UNIQUE_ID),
        (PP2_TYPE_SSL, ssl_value),
        (PP2_TYPE_NETNS, b"blue"),
        (0xEA, b"vpce-0123"),  # a vendor's custom type (PP section 2.2.8)
        (0xFF, b"\x00\x01"),
    ]
    outcome = run(v2(V4_BLOCK, tlvs) + CLIENT_HELLO, feed)
    assert outcome.header is not None
    assert outcome.header.tlvs == tuple(tlvs)
    assert outcome.header.source == V4_HEADER.source
    assert outcome.header.tlv(PP2_TYPE_AUTHORITY) == b"mail.example.com"
    assert outcome.header.tlv(0x42) is None
    assert outcome.remaining == CLIENT_HELLO


def test_v2_crc32c_verified(feed: Feed) -> None:
    header = v2(V4_BLOCK, [(PP2_TYPE_ALPN, b"pop3")], crc=True)
    outcome = run(header + POP3, feed)
    assert outcome.header is not None
    assert outcome.header.tlv(PP2_TYPE_CRC32C) == header[-4:]
    assert outcome.remaining == POP3


def test_v2_crc32c_mismatch_refused(feed: Feed) -> None:
    """Regression: PP section 2.2.3, a wrong checksum "MUST" make the connection invalid."""
    header = bytearray(v2(V4_BLOCK, [(PP2_TYPE_ALPN, b"pop3")], crc=True))
    header[17] ^= 0x01  # flip one bit of the source address
    expect_error(bytes(header), feed, V2TlvError)


@pytest.mark.parametrize(
    "tlvs",
    [
        [(PP2_TYPE_CRC32C, b"\x00\x00\x00")],
        [(PP2_TYPE_CRC32C, bytes(5))],
        [(PP2_TYPE_UNIQUE_ID, b"u" * (MAX_UNIQUE_ID + 1))],
        [(PP2_TYPE_SSL, b"\x01\x00\x00\x00")],
        [(PP2_TYPE_SSL, b"\x01" + bytes(4) + b"\x21\x00\x09TLS")],  # sub-TLV overrun
        [(PP2_TYPE_SSL, b"\x01" + bytes(4) + b"\x21")],  # sub-TLV header cut
    ],
)
def test_v2_malformed_known_tlv_refused(feed: Feed, tlvs: list[tuple[int, bytes]]) -> None:
    expect_error(v2(V4_BLOCK, tlvs), feed, V2TlvError)


def test_v2_duplicate_crc32c_refused(feed: Feed) -> None:
    expect_error(v2(V4_BLOCK, [(PP2_TYPE_CRC32C, bytes(4))], crc=True), feed, V2TlvError)


def test_v2_tlv_overrun_refused(feed: Feed) -> None:
    """Regression: a TLV whose length runs past the announced header end is refused."""
    overrun = v2(V4_BLOCK + b"\xe0\x00\x10" + b"abc")  # announces 16 value bytes, has 3
    expect_error(overrun + POP3, feed, V2TlvError)


@pytest.mark.parametrize("stray", [b"\xe0", b"\xe0\x00"])
def test_v2_cut_tlv_header_refused(feed: Feed, stray: bytes) -> None:
    expect_error(v2(V4_BLOCK + stray) + POP3, feed, V2TlvError)


@pytest.mark.parametrize(
    ("family", "block"),
    [(0x11, V4_BLOCK[:-1]), (0x11, b""), (0x21, V4_BLOCK), (0x21, V6_BLOCK[:-1])],
)
def test_v2_truncated_address_block_refused(feed: Feed, family: int, block: bytes) -> None:
    """Regression: the length must cover the family's address block (PP section 2.2)."""
    expect_error(v2(block, family=family) + POP3, feed, V2AddressBlockError)


@pytest.mark.parametrize("length", [MAX_V2_PAYLOAD + 1, 0xFFFF])
def test_v2_length_over_max_refused_without_waiting(length: int) -> None:
    """Regression: a huge announced length is refused at byte 16, not buffered."""
    for f in FEEDS:
        expect_error(v2(V4_BLOCK, length=length), f, V2LengthError)
    assert run(v2(V4_BLOCK, length=length), bytewise).fed == 16


def test_v2_length_at_max_accepted(feed: Feed) -> None:
    padding = (PP2_TYPE_NOOP, bytes(MAX_V2_PAYLOAD - len(V4_BLOCK) - 3))
    header = v2(V4_BLOCK, [padding])
    assert len(header) == 16 + MAX_V2_PAYLOAD
    assert run(header + POP3, feed).remaining == POP3


@pytest.mark.parametrize("ver_cmd", [0x11, 0x01, 0x31, 0xF1])
def test_v2_bad_version_refused(feed: Feed, ver_cmd: int) -> None:
    header = v2(V4_BLOCK, version=ver_cmd >> 4, command=ver_cmd & 0xF)
    assert run(header, bytewise, eof=True).fed == 13
    expect_error(header, feed, V2VersionError)


@pytest.mark.parametrize("command", [0x2, 0x3, 0xF])
def test_v2_bad_command_refused(feed: Feed, command: int) -> None:
    expect_error(v2(V4_BLOCK, command=command), feed, V2CommandError)


@pytest.mark.parametrize(
    ("command", "family"),
    [
        (0x1, 0x12),  # UDP over IPv4
        (0x1, 0x22),  # UDP over IPv6
        (0x1, 0x31),  # UNIX stream
        (0x1, 0x32),  # UNIX datagram
        (0x1, 0x10),  # AF_INET with UNSPEC transport
        (0x1, 0x01),  # AF_UNSPEC with STREAM transport
        (0x1, 0x41),  # family nibble out of range
        (0x1, 0x13),  # transport nibble out of range
        (0x0, 0xFF),  # LOCAL still needs valid nibbles
        (0x0, 0x14),
    ],
)
def test_v2_unsupported_family_refused(feed: Feed, command: int, family: int) -> None:
    header = v2(b"\x00" * 216, command=command, family=family)
    expect_error(header, feed, UnsupportedAddressError)
    assert run(header, bytewise).fed == 14  # decided on the family byte itself


# ------------------------------------------------------------------ not a PROXY header


@pytest.mark.parametrize(
    ("data", "decided_at"),
    [
        (b"GET / HTTP/1.1\r\n", 1),
        (CLIENT_HELLO, 1),
        (POP3, 1),
        (b"SSH-2.0-x\r\n", 1),
        (b"\x00" * 20, 1),
        (b"PROXZ TCP4\r\n", 5),
        (b"proxy TCP4\r\n", 1),
        (b"PROXY\r\n", 6),
        (b"\r\n\r\nQUIT\n", 5),
        (b"\r\n\r\n\x00\r\nQUIT\r\n" + bytes(8), 12),
        (b"\r\nUSER x\r\n", 3),
    ],
)
def test_not_a_proxy_header_refused_at_first_mismatch(
    feed: Feed, data: bytes, decided_at: int
) -> None:
    expect_error(data, feed, NotProxyProtocolError)
    assert run(data, bytewise).fed == decided_at


def test_tls_client_hello_rejected_after_first_byte() -> None:
    """Regression: a client that skips the load balancer is refused at once, not at byte 107."""
    parser = ProxyHeaderParser()
    parser.receive_data(b"\x16")
    with pytest.raises(NotProxyProtocolError, match="not a PROXY protocol header"):
        parser.next_event()


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"PROX",
        b"PROXY TCP4 192.0.2.1 198.51.100.2 1 2",
        b"PROXY TCP4 192.0.2.1 198.51.100.2 1 2\r",
        V2_SIGNATURE[:7],
        v2(V4_BLOCK)[:15],
        v2(V4_BLOCK)[:-1],
    ],
)
def test_eof_inside_the_header_refused(feed: Feed, data: bytes) -> None:
    """PP section 2.2: "reject incoming connections containing partial protocol headers"."""
    assert run(data, feed).error is None  # without EOF it is only waiting
    expect_error(data, feed, TruncatedHeaderError)


# ------------------------------------------------------------------ trailing bytes


@pytest.mark.parametrize(
    "header",
    [
        v1("TCP4", "192.0.2.1", "198.51.100.2", 1, 2),
        b"PROXY UNKNOWN\r\n",
        v2(V4_BLOCK),
        v2(V6_BLOCK, [(0xE0, b"x" * 30)], family=0x21, crc=True),
        v2(command=0x0, family=0x00),
    ],
)
@pytest.mark.parametrize(
    "trailing",
    [
        b"",
        POP3,
        CLIENT_HELLO,
        b"\r\n",
        b"\n",
        V2_SIGNATURE + b"\x21\x11\x00\x00",  # a second header is application data
        b"PROXY UNKNOWN\r\n",
        bytes(range(256)) * 8,
    ],
)
def test_trailing_bytes_returned_exactly(feed: Feed, header: bytes, trailing: bytes) -> None:
    """Regression: nothing after the header is lost, reordered or parsed (TLS, POP3 data)."""
    outcome = run(header + trailing, feed)
    assert outcome.header is not None
    assert outcome.remaining == trailing
    assert outcome.fed >= len(header)


def test_bytes_received_after_the_header_are_remaining_too() -> None:
    parser = ProxyHeaderParser()
    parser.receive_data(b"PROXY UNKNOWN\r\nUS")
    header = parser.next_event()
    parser.receive_data(b"ER x\r\n")
    parser.receive_data(b"")  # EOF after the header is not an error
    assert parser.next_event() is header  # the header repeats
    assert parser.remaining() == POP3


def test_remaining_before_the_header_is_a_programming_error() -> None:
    parser = ProxyHeaderParser()
    parser.receive_data(b"PROXY ")
    assert parser.next_event() is NEED_DATA
    with pytest.raises(RuntimeError):
        parser.remaining()


def test_error_repeats_and_frees_the_buffer() -> None:
    parser = ProxyHeaderParser()
    parser.receive_data(b"GET / HTTP/1.1\r\n")
    with pytest.raises(NotProxyProtocolError) as first:
        parser.next_event()
    parser.receive_data(b"PROXY UNKNOWN\r\n")
    with pytest.raises(NotProxyProtocolError) as second:
        parser.next_event()
    assert second.value is first.value
    assert not parser._buf  # nothing kept after the error, nothing buffered after it


def test_decode_header_helper() -> None:
    assert decode_header(v2(V4_BLOCK) + CLIENT_HELLO) == (V4_HEADER, CLIENT_HELLO)
    assert decode_header(b"PROXY UNKNOWN\r\n") == (LOCAL_V1, b"")
    with pytest.raises(TruncatedHeaderError):
        decode_header(v2(V4_BLOCK)[:20])
    with pytest.raises(NotProxyProtocolError):
        decode_header(POP3)
    with pytest.raises(ValueError, match="PROXY"):  # every error is a ValueError
        decode_header(b"PROXY TCP4 x\r\n")


# ------------------------------------------------------------------ chunking never matters

ALL_INPUTS = [
    v1("TCP4", "192.0.2.1", "198.51.100.2", 1, 2) + POP3,
    v1("TCP6", "::1", "::2", 1, 2) + CLIENT_HELLO,
    unknown_line(MAX_V1_HEADER) + POP3,
    unknown_line(MAX_V1_HEADER + 1) + POP3,
    v2(V4_BLOCK, [(PP2_TYPE_ALPN, b"pop3")], crc=True) + CLIENT_HELLO,
    v2(V4_BLOCK + b"\xe0\x00\x10abc") + POP3,
    v2(V4_BLOCK, length=MAX_V2_PAYLOAD + 1),
    v2(V4_BLOCK[:-1]),
    CLIENT_HELLO,
    *(line + POP3 for line in V1_MALFORMED),
]


@pytest.mark.parametrize("data", ALL_INPUTS)
def test_whole_and_bytewise_give_identical_results(data: bytes) -> None:
    reference = run(data, whole, eof=True)
    for f in FEEDS[1:]:
        got = run(data, f, eof=True)
        assert (got.header, got.remaining, got.error) == (
            reference.header,
            reference.remaining,
            reference.error,
        )


# ------------------------------------------------------------------ properties

PREFIXES = [
    b"",
    V1_SIGNATURE,
    b"PROXY TCP4 ",
    b"PROXY TCP6 ",
    b"PROXY UNKNOWN",
    V2_SIGNATURE,
    V2_SIGNATURE + b"\x21\x11",
    V2_SIGNATURE + b"\x21\x21\x00\x40",
    V2_SIGNATURE + b"\x20\x00",
]
cuts = st.lists(st.integers(min_value=1, max_value=400), max_size=12)


@given(st.sampled_from(PREFIXES), st.binary(max_size=300), cuts)
def test_arbitrary_bytes_only_raise_proxy_protocol_error(
    prefix: bytes, data: bytes, cut: list[int]
) -> None:
    data = prefix + data
    reference = run(data, whole, eof=True)  # anything but ProxyProtocolError fails the test
    got = run(data, split_at(*cut), eof=True)
    assert (got.header, got.remaining, got.error) == (
        reference.header,
        reference.remaining,
        reference.error,
    )


ports = st.integers(min_value=0, max_value=65535)
small_tlvs = st.lists(
    st.tuples(
        st.integers(min_value=0, max_value=255).filter(
            lambda t: t not in (PP2_TYPE_CRC32C, PP2_TYPE_SSL)
        ),
        st.binary(max_size=64),
    ),
    max_size=8,
)


@st.composite
def v1_headers(draw: st.DrawFn) -> tuple[bytes, ProxyHeader]:
    version: Literal[4, 6] = draw(st.sampled_from([4, 6]))
    src, dst = draw(st.ip_addresses(v=version)), draw(st.ip_addresses(v=version))
    sport, dport = draw(ports), draw(ports)
    # Either form (a mapped IPv6 address is dotted in both from Python 3.13 on: the decoder
    # takes the dotted form, which nginx sends).
    text = (lambda a: a.exploded) if draw(st.booleans()) or version == 4 else str
    line = v1(f"TCP{version}", text(src), text(dst), sport, dport)
    return line, ProxyHeader(1, "PROXY", (src, sport), (dst, dport))


@st.composite
def v2_headers(draw: st.DrawFn) -> tuple[bytes, ProxyHeader]:
    family = draw(st.sampled_from([0x11, 0x21]))
    version: Literal[4, 6] = 4 if family == 0x11 else 6
    src, dst = draw(st.ip_addresses(v=version)), draw(st.ip_addresses(v=version))
    sport, dport = draw(ports), draw(ports)
    tlvs = draw(small_tlvs)
    crc = draw(st.booleans())
    header = v2(inet(str(src), str(dst), sport, dport), tlvs, family=family, crc=crc)
    all_tlvs = [*tlvs, (PP2_TYPE_CRC32C, header[-4:])] if crc else tlvs
    return header, ProxyHeader(2, "PROXY", (src, sport), (dst, dport), tuple(all_tlvs))


@st.composite
def local_headers(draw: st.DrawFn) -> tuple[bytes, ProxyHeader]:
    if draw(st.booleans()):
        padding = draw(st.binary(max_size=MAX_V1_HEADER - 16).filter(lambda b: b"\r" not in b))
        line = b"PROXY UNKNOWN" + (b" " + padding.replace(b"\n", b"x") if padding else b"")
        return line + b"\r\n", LOCAL_V1
    family = draw(st.sampled_from([0x00, 0x11, 0x12, 0x21, 0x22, 0x31, 0x32]))
    return v2(draw(st.binary(max_size=300)), command=0x0, family=family), LOCAL_V2


@given(st.one_of(v1_headers(), v2_headers(), local_headers()), st.binary(max_size=200), cuts)
def test_valid_headers_round_trip_exactly(
    case: tuple[bytes, ProxyHeader], trailing: bytes, cut: list[int]
) -> None:
    encoded, expected = case
    assert decode_header(encoded + trailing) == (expected, trailing)
    outcome = run(encoded + trailing, split_at(*cut))
    assert (outcome.header, outcome.remaining) == (expected, trailing)
