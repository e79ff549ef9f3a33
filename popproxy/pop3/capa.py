"""CAPA (RFC 2449 section 5): parse the upstream's list, filter it, render our own."""

from __future__ import annotations

from dataclasses import dataclass

from popproxy.pop3 import limits
from popproxy.pop3.errors import RemoteProtocolError


@dataclass(frozen=True, slots=True)
class Capability:
    """One capability line: a tag (case-insensitive, RFC 2449 section 6) and its arguments."""

    name: str
    args: tuple[str, ...] = ()

    def render(self) -> bytes:
        return " ".join((self.name, *self.args)).encode("ascii")


def _is_cchar(c: str) -> bool:
    """RFC 2449 section 9: cchar = %x21-2D / %x2F-7F (printable ASCII, excluding ".")."""
    return "!" <= c <= "\x7f" and c != "."


def parse_capa_body(body: bytes) -> tuple[Capability, ...]:
    """Parse an unstuffed CAPA body (lines separated by CRLF, no terminator)."""
    caps: list[Capability] = []
    for raw in body.split(b"\r\n"):
        if not raw:
            continue
        if len(raw) + 2 > limits.MAX_CAPA_LINE:
            raise RemoteProtocolError("CAPA line too long (RFC 2449 section 6)")
        try:
            words = raw.decode("ascii").split()
        except UnicodeDecodeError:
            raise RemoteProtocolError("CAPA line is not ASCII (RFC 2449 section 6)") from None
        if not words:
            continue
        if not all(_is_cchar(c) for c in words[0]):
            # The tag starts the line we render unstuffed: a "." there would end our reply.
            raise RemoteProtocolError("CAPA tag outside RFC 2449 section 9 (cchar)")
        caps.append(Capability(words[0].upper(), tuple(words[1:])))
        if len(caps) > limits.MAX_CAPA_LINES:
            raise RemoteProtocolError(f"more than {limits.MAX_CAPA_LINES} CAPA lines")
    return tuple(caps)


# Capabilities the proxy answers itself or must not leak from the upstream:
#  STLS        - TLS is between client and proxy, never relayed (RFC 2595 section 4);
#  IMPLEMENTATION - would disclose the legacy server's software (RFC 2449 section 6.9);
#  SASL, USER  - login happens at the proxy, before the upstream is even chosen;
#  LOGIN-DELAY, EXPIRE - values describe the upstream's policy, not ours; kept (relevant to
#                clients) only after login.
_NEVER_RELAYED = frozenset({"STLS", "IMPLEMENTATION", "SASL", "USER"})


def filter_upstream(caps: tuple[Capability, ...]) -> tuple[Capability, ...]:
    """The upstream's capabilities that stay true when seen through the proxy."""
    return tuple(c for c in caps if c.name not in _NEVER_RELAYED)


def render_capa(caps: tuple[Capability, ...]) -> list[bytes]:
    """CAPA body lines (none can start with ".": tags are letters, RFC 2449 section 6)."""
    return [c.render() for c in caps]
