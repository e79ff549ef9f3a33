"""Sans-io decoder for the PROXY protocol header, versions 1 and 2.

Spec: HAProxy, "The PROXY protocol, Versions 1 & 2" (2020/03/05), cited as "PP section N".
The version is auto-detected from the first bytes (PP section 2.2, end): the 12-byte binary
signature means version 2, ``"PROXY "`` means version 1, anything else is refused as soon as
one byte fails to match both (PP section 2.1: "abort the connection as soon as possible").

Decisions (each within what the spec allows):

* ``command == "LOCAL"`` means "use the socket's own addresses": v2 LOCAL (PP section 2.2),
  v1 ``UNKNOWN`` (PP section 2.1, "SHOULD accept") and v2 PROXY over ``AF_UNSPEC``, the one
  family a receiver must implement.  The rest of such a header is skipped, TLVs included.
* v2 PROXY over UDP or ``AF_UNIX`` is refused (``UnsupportedAddressError``): POP3 is TCP, and a
  UNIX peer has no IP address for per-client policy.  PP section 2.2 lets a receiver reject
  anything it does not implement that would fall back to UNSPEC.
* ``MAX_V2_PAYLOAD`` bounds what a peer can make us buffer before the header is complete.
* ``PP2_TYPE_CRC32C`` is verified (PP section 2.2.3) with a table-driven pure Python CRC32c;
  ``PP2_TYPE_SSL`` and ``PP2_TYPE_UNIQUE_ID`` are checked for shape; all TLVs, unknown types
  included, are returned in order in ``ProxyHeader.tlvs``.
* End of input (``receive_data(b"")``) inside a header is an error (PP section 2.2: "reject
  incoming connections containing partial protocol headers").
"""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address
from typing import Literal, TypeAlias

from popproxy.pop3.events import NEED_DATA as NEED_DATA
from popproxy.pop3.events import Need

# PP section 2.1: the worst-case v1 line is 107 characters including the CRLF; "If the CRLF
# sequence is not found in the first 107 characters, the receiver should declare the line
# invalid."
MAX_V1_HEADER = 107

# PP section 2.2: the signature, version/command, family/transport and 16-bit length.
V2_FIXED_HEADER = 16

# PP section 2.2 allows 65535 bytes after the fixed part but designs the header to fit one
# 536-byte segment (PP section 2).  Registered TLVs can legitimately exceed that (AUTHORITY up
# to 255, UNIQUE_ID up to 128, SSL with its sub-TLVs, cloud vendors' custom types), so allow
# about twice it: one v2 header never makes us buffer more than 16 + 1024 bytes.
MAX_V2_PAYLOAD = 1024

# PP section 2.2.5: "an opaque byte sequence of up to 128 bytes".
MAX_UNIQUE_ID = 128

V1_SIGNATURE = b"PROXY "
V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"

# TLV types, PP section 2.2.
PP2_TYPE_ALPN = 0x01
PP2_TYPE_AUTHORITY = 0x02
PP2_TYPE_CRC32C = 0x03
PP2_TYPE_NOOP = 0x04
PP2_TYPE_UNIQUE_ID = 0x05
PP2_TYPE_SSL = 0x20
PP2_TYPE_NETNS = 0x30

IPAddress: TypeAlias = IPv4Address | IPv6Address
Address: TypeAlias = tuple[IPAddress, int]
Tlv: TypeAlias = tuple[int, bytes]
NeedData: TypeAlias = Need
_AddressType: TypeAlias = type[IPv4Address] | type[IPv6Address]

# The v1 protocol field and the byte after it (PP section 2.1).
_V1_PROTOCOLS = (b"TCP4 ", b"TCP6 ", b"UNKNOWN ", b"UNKNOWN\r")
# Bytes an address/port part of a TCP4 / TCP6 line may hold (PP section 2.1): this also
# refuses IPv6 scope ids ("%eth0").  A TCP6 address may end in a dotted IPv4 part (RFC 4291
# section 2.2, form 3), which section 2.1 does not list: nginx (ipv6only=off) and HAProxy
# (send-proxy, a "v4v6" bind) send "::ffff:192.0.2.1" for an IPv4 client on a dual-stack
# listener (glibc's inet_ntop), so refusing it dropped every IPv4 client behind them.  The
# policy matches a mapped address as the IPv4 address it stands for (decisions.unmapped).
_V1_CHARSETS = {
    b"TCP4": frozenset(b"0123456789. "),
    b"TCP6": frozenset(b"0123456789abcdefABCDEF:. "),
}
_V1_FAMILIES: dict[bytes, _AddressType] = {b"TCP4": IPv4Address, b"TCP6": IPv6Address}
# v2 family/transport bytes we decode (PP section 2.2): TCP over IPv4, TCP over IPv6.
_V2_TCP: dict[int, tuple[_AddressType, int]] = {0x11: (IPv4Address, 4), 0x21: (IPv6Address, 16)}
_V2_UNSPEC = 0x00
_V2_LOCAL, _V2_PROXY = 0x0, 0x1
_TLV_HEADER = 3  # type, length_hi, length_lo (PP section 2.2)
_SSL_FIXED = 5  # pp2_tlv_ssl: uint8 client, uint32 verify (PP section 2.2.6)
_MAX_PORT = 65535


class ProxyProtocolError(ValueError):
    """The connection does not start with a valid PROXY header: abort it (PP section 2.1)."""


class NotProxyProtocolError(ProxyProtocolError):
    """The first bytes match neither signature (PP section 2.2, version detection)."""


class TruncatedHeaderError(ProxyProtocolError):
    """End of input inside the header (PP section 2.2: partial headers are rejected)."""


class V1HeaderTooLongError(ProxyProtocolError):
    """No CRLF within ``MAX_V1_HEADER`` bytes (PP section 2.1)."""


class V1MalformedError(ProxyProtocolError):
    """A v1 line that does not match PP section 2.1 exactly."""


class V2VersionError(ProxyProtocolError):
    """Version nibble other than 2 (PP section 2.2: "the receiver must only accept this value")."""


class V2CommandError(ProxyProtocolError):
    """Command other than LOCAL or PROXY (PP section 2.2: "Receivers must drop connections")."""


class UnsupportedAddressError(ProxyProtocolError):
    """Invalid family/transport nibbles, or a PROXY over UDP / AF_UNIX (PP section 2.2)."""


class V2LengthError(ProxyProtocolError):
    """Announced length over ``MAX_V2_PAYLOAD``, or too short for the address block."""


class V2AddressBlockError(V2LengthError):
    """Announced length shorter than the family's address block (PP section 2.2)."""


class V2TlvError(ProxyProtocolError):
    """A TLV that runs past the header, a malformed known TLV or a CRC32c mismatch."""


@dataclass(frozen=True, slots=True)
class ProxyHeader:
    """A decoded header.  ``source``/``destination`` are set only when ``command == "PROXY"``.

    ``"LOCAL"`` means: use the socket's real endpoints (see the module docstring).
    """

    version: int
    command: Literal["PROXY", "LOCAL"]
    source: Address | None
    destination: Address | None
    tlvs: tuple[Tlv, ...] = ()

    def tlv(self, tlv_type: int) -> bytes | None:
        """The value of the first TLV of ``tlv_type`` (PP section 2.2), or None."""
        return next((value for t, value in self.tlvs if t == tlv_type), None)


class ProxyHeaderParser:
    """Owns the receive buffer until the header is decoded, then hands over ``remaining()``.

    Feed bytes with ``receive_data`` (``b""`` means EOF) and call ``next_event``: it returns
    ``NEED_DATA``, the ``ProxyHeader`` (again on every later call) or raises a
    ``ProxyProtocolError`` (again on every later call).
    """

    def __init__(self) -> None:
        self._buf = bytearray()
        self._eof = False
        self._header: ProxyHeader | None = None
        self._error: ProxyProtocolError | None = None

    def receive_data(self, data: bytes) -> None:
        if self._error is not None:  # the connection is being aborted: keep nothing
            return
        if not data:
            self._eof = True
        else:
            self._buf += data

    def next_event(self) -> ProxyHeader | NeedData:
        if self._header is not None:
            return self._header
        if self._error is not None:
            raise self._error
        try:
            decoded = _decode(self._buf)
            if decoded is None and self._eof:
                raise TruncatedHeaderError(f"input ended after {len(self._buf)} header bytes")
        except ProxyProtocolError as exc:
            self._error = exc
            self._buf.clear()
            raise
        if decoded is None:
            return NEED_DATA
        self._header, size = decoded
        del self._buf[:size]
        return self._header

    def remaining(self) -> bytes:
        """Every byte received after the header, exactly: they belong to the next protocol."""
        if self._header is None:
            raise RuntimeError("remaining() called before the PROXY header was decoded")
        return bytes(self._buf)


def decode_header(data: bytes) -> tuple[ProxyHeader, bytes]:
    """Decode a header from a complete buffer; return it and the bytes that follow it."""
    parser = ProxyHeaderParser()
    parser.receive_data(data)
    parser.receive_data(b"")
    header = parser.next_event()
    assert isinstance(header, ProxyHeader)  # at EOF the parser either decodes or raises
    return header, parser.remaining()


def _decode(buf: bytearray) -> tuple[ProxyHeader, int] | None:
    """(header, its size), or None if more bytes are needed (PP section 2.2, detection)."""
    if buf.startswith(V2_SIGNATURE):
        return _decode_v2(buf)
    if buf.startswith(V1_SIGNATURE):
        return _decode_v1(bytes(buf[:MAX_V1_HEADER]))
    if not (V2_SIGNATURE.startswith(buf[:12]) or V1_SIGNATURE.startswith(buf[:6])):
        raise NotProxyProtocolError(f"not a PROXY protocol header: {bytes(buf[:16])!r}")
    return None


# ------------------------------------------------------------------ version 1 (PP section 2.1)


def _decode_v1(window: bytes) -> tuple[ProxyHeader, int] | None:
    end = _v1_line_end(window)
    if end < 0:
        if len(window) >= MAX_V1_HEADER:
            raise V1HeaderTooLongError(f"no CRLF in the first {MAX_V1_HEADER} bytes")
        return None
    return _v1_header(window[:end].split(b" ")), end + 2


def _v1_line_end(window: bytes) -> int:
    """Offset of the CRLF, or -1; refuses bad bytes as soon as they arrive."""
    rest = window[len(V1_SIGNATURE) :]
    if not any(p.startswith(rest[: len(p)]) for p in _V1_PROTOCOLS):
        raise V1MalformedError(f"unknown v1 protocol field: {rest[:8]!r}")
    end = min((i for i in (window.find(b"\r"), window.find(b"\n")) if i >= 0), default=-1)
    line = window if end < 0 else window[:end]
    if end >= 0 and (window[end] != 0x0D or window[end + 1 : end + 2] not in (b"", b"\n")):
        raise V1MalformedError("v1 line must end with CRLF, not a lone CR or LF")
    charset = _V1_CHARSETS.get(rest[:4])
    if charset is not None and not charset.issuperset(line[len(V1_SIGNATURE) + 5 :]):
        raise V1MalformedError(f"bad character in a {rest[:4].decode()} line: {line!r}")
    return end if end + 1 < len(window) else -1


def _v1_header(fields: list[bytes]) -> ProxyHeader:
    if fields[1] == b"UNKNOWN":  # PP section 2.1: the rest of the line is ignored
        return ProxyHeader(1, "LOCAL", None, None)
    if len(fields) != 6:
        raise V1MalformedError(f"v1 {fields[1]!r} line needs 6 fields, got {len(fields)}")
    family = _V1_FAMILIES[fields[1]]
    source = (_v1_address(family, fields[2]), _v1_port(fields[4]))
    destination = (_v1_address(family, fields[3]), _v1_port(fields[5]))
    return ProxyHeader(1, "PROXY", source, destination)


def _v1_address(family: _AddressType, text: bytes) -> IPAddress:
    """Parse one address; ``ipaddress`` refuses IPv4 leading zeros (PP section 2.1)."""
    try:
        return family(text.decode("ascii"))
    except ValueError as exc:  # includes UnicodeDecodeError and AddressValueError
        raise V1MalformedError(f"bad {family.__name__} address {text!r}: {exc}") from None


def _v1_port(text: bytes) -> int:
    """A decimal port in [0..65535] without leading zeros (PP section 2.1)."""
    if not (text.isdigit() and len(text) <= 5) or (text[:1] == b"0" and text != b"0"):
        raise V1MalformedError(f"bad port {text!r}")
    if int(text) > _MAX_PORT:
        raise V1MalformedError(f"port {text!r} out of range")
    return int(text)


# ------------------------------------------------------------------ version 2 (PP section 2.2)


def _decode_v2(buf: bytearray) -> tuple[ProxyHeader, int] | None:
    fixed = bytes(buf[:V2_FIXED_HEADER])
    command = _v2_command(fixed)
    if command is not None and len(fixed) > 13:
        _v2_check_family(command, fixed[13])
    if command is None or len(fixed) < V2_FIXED_HEADER:
        return None
    length = int.from_bytes(fixed[14:16], "big")
    if length > MAX_V2_PAYLOAD:
        raise V2LengthError(f"v2 length {length} over the maximum of {MAX_V2_PAYLOAD}")
    total = V2_FIXED_HEADER + length
    if len(buf) < total:
        return None
    return _v2_header(command, bytes(buf[:total])), total


def _v2_command(fixed: bytes) -> int | None:
    """The command from the 13th byte, or None if it has not arrived yet."""
    if len(fixed) <= 12:
        return None
    version, command = fixed[12] >> 4, fixed[12] & 0x0F
    if version != 2:
        raise V2VersionError(f"v2 signature with version {version}, only 2 is accepted")
    if command not in (_V2_LOCAL, _V2_PROXY):
        raise V2CommandError(f"v2 command {command:#x} is neither LOCAL nor PROXY")
    return command


def _v2_check_family(command: int, family: int) -> None:
    """PP section 2.2: invalid nibbles are refused; PROXY must be TCP (or UNSPEC)."""
    if family >> 4 > 3 or family & 0x0F > 2:
        raise UnsupportedAddressError(f"invalid v2 family/transport byte {family:#04x}")
    if command == _V2_PROXY and family != _V2_UNSPEC and family not in _V2_TCP:
        raise UnsupportedAddressError(
            f"v2 family/transport {family:#04x} not supported: only TCP over IPv4/IPv6"
        )


def _v2_header(command: int, header: bytes) -> ProxyHeader:
    family = header[13]
    if command == _V2_LOCAL or family == _V2_UNSPEC:  # PP section 2.2: ignore the block
        return ProxyHeader(2, "LOCAL", None, None)
    address_type, size = _V2_TCP[family]
    block = V2_FIXED_HEADER + 2 * size + 4
    if len(header) < block:
        need, got = block - V2_FIXED_HEADER, len(header) - V2_FIXED_HEADER
        raise V2AddressBlockError(f"v2 address block of {got} bytes, {family:#04x} needs {need}")
    src = address_type(header[16 : 16 + size])
    dst = address_type(header[16 + size : 16 + 2 * size])
    ports = header[block - 4 : block]
    tlvs = _v2_tlvs(header, block)
    source = (src, int.from_bytes(ports[:2], "big"))
    return ProxyHeader(2, "PROXY", source, (dst, int.from_bytes(ports[2:], "big")), tlvs)


def _v2_tlvs(header: bytes, start: int) -> tuple[Tlv, ...]:
    """Split and check the TLVs after the address block (PP sections 2.2.1 to 2.2.7)."""
    tlvs = _split_tlvs(header, start)
    for tlv_type, _, value in tlvs:
        _check_tlv(tlv_type, value)
    crc_offsets = [offset for tlv_type, offset, _ in tlvs if tlv_type == PP2_TYPE_CRC32C]
    if len(crc_offsets) > 1:
        raise V2TlvError("more than one PP2_TYPE_CRC32C TLV")
    if crc_offsets:
        _check_crc32c(header, crc_offsets[0])
    return tuple((tlv_type, value) for tlv_type, _, value in tlvs)


def _split_tlvs(data: bytes, start: int) -> list[tuple[int, int, bytes]]:
    """(type, value offset, value) for each TLV in ``data[start:]``; must end on a boundary."""
    out: list[tuple[int, int, bytes]] = []
    pos = start
    while pos < len(data):
        if len(data) - pos < _TLV_HEADER:
            raise V2TlvError(f"{len(data) - pos} stray bytes where a TLV header was expected")
        length = int.from_bytes(data[pos + 1 : pos + 3], "big")
        end = pos + _TLV_HEADER + length
        if end > len(data):
            raise V2TlvError(f"TLV {data[pos]:#04x} of {length} bytes runs past the header")
        out.append((data[pos], pos + _TLV_HEADER, data[pos + _TLV_HEADER : end]))
        pos = end
    return out


def _check_tlv(tlv_type: int, value: bytes) -> None:
    if tlv_type == PP2_TYPE_CRC32C and len(value) != 4:
        raise V2TlvError(f"PP2_TYPE_CRC32C value must be 4 bytes, got {len(value)}")
    if tlv_type == PP2_TYPE_UNIQUE_ID and len(value) > MAX_UNIQUE_ID:
        raise V2TlvError(f"PP2_TYPE_UNIQUE_ID of {len(value)} bytes, max {MAX_UNIQUE_ID}")
    if tlv_type == PP2_TYPE_SSL:
        if len(value) < _SSL_FIXED:
            raise V2TlvError(f"PP2_TYPE_SSL value of {len(value)} bytes, needs {_SSL_FIXED}")
        _split_tlvs(value, _SSL_FIXED)  # sub-TLVs must not overrun the SSL TLV


def _check_crc32c(header: bytes, offset: int) -> None:
    """PP section 2.2.3: CRC32c of the whole header with the checksum field zeroed."""
    expected = int.from_bytes(header[offset : offset + 4], "big")
    actual = crc32c(header[:offset] + bytes(4) + header[offset + 4 :])
    if actual != expected:
        raise V2TlvError(f"PP2_TYPE_CRC32C mismatch: header says {expected:#010x}")


def _crc32c_table() -> tuple[int, ...]:
    table = []
    for n in range(256):
        crc = n
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1  # reflected Castagnoli
        table.append(crc)
    return tuple(table)


_CRC32C_TABLE = _crc32c_table()


def crc32c(data: bytes) -> int:
    """CRC32c (Castagnoli) as in RFC 4960 appendix B, which PP section 2.2.3 refers to."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc = _CRC32C_TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF
