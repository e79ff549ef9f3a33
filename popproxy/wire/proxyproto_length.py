"""How long the PROXY protocol header at the start of a connection is, from its first bytes.

A channel that reads its socket itself (``proxy/socket_channel.py``) must take exactly the
header out of the socket when TLS follows it: every later byte belongs to OpenSSL, which reads
the socket on its own.  It peeks (``MSG_PEEK``), asks ``header_length``, and receives that
many bytes.  Sans-io, and linear: it looks at most at ``MAX_V1_HEADER`` bytes of a v1 line and
at the 16-byte fixed part of a v2 header.  Whether the header is valid is the parser's
business (``proxyproto.ProxyHeaderParser``), not this function's.
"""

from __future__ import annotations

from popproxy.wire.proxyproto import MAX_V1_HEADER, V1_SIGNATURE, V2_FIXED_HEADER, V2_SIGNATURE

# PP section 2.2: the 16-bit payload length is bytes 15 and 16 of the fixed part (big endian).
_V2_LENGTH = slice(14, 16)


def header_length(prefix: bytes) -> int | None:
    """The length of the header that ``prefix`` starts with, or None while the prefix does not
    show it yet (or is no header at all: the parser refuses those bytes).

    v2 (PP section 2.2): the fixed part and its announced length; v1 (PP section 2.1): up to
    and including the first CRLF, looked for in the first ``MAX_V1_HEADER`` bytes only.
    """
    if prefix.startswith(V2_SIGNATURE):
        if len(prefix) < V2_FIXED_HEADER:
            return None
        return V2_FIXED_HEADER + int.from_bytes(prefix[_V2_LENGTH], "big")
    if prefix.startswith(V1_SIGNATURE):
        end = prefix.find(b"\r\n", 0, MAX_V1_HEADER)
        return None if end < 0 else end + 2
    return None
