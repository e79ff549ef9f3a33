"""CAPA (RFC 2449 section 5): parse the upstream's list, filter it, render our own."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from popproxy.pop3 import limits
from popproxy.pop3.errors import RemoteProtocolError
from popproxy.pop3.verbs import VERBS, VerbFacts


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


def _login_only(facts: VerbFacts) -> bool:
    return "transaction" not in facts.phases


# Capabilities the proxy answers itself or must not leak from the upstream:
#  the tags of login-phase verbs (STLS, USER, SASL) - TLS is between client and proxy, never
#                relayed (RFC 2595 section 4), and login happens at the proxy, before the
#                upstream is even chosen;
#  IMPLEMENTATION - would disclose the legacy server's software (RFC 2449 section 6.9);
#  LOGIN-DELAY, EXPIRE - values describe the upstream's policy, not ours; kept (relevant to
#                clients) only after login.
_NEVER_RELAYED = frozenset(
    {f.capa for f in VERBS.values() if f.capa is not None and _login_only(f)} | {"IMPLEMENTATION"}
)

# Capabilities that name no verb but what the proxy itself does: response codes (RFC 2449
# section 6.4; AUTH-RESP-CODE, RFC 3206 section 6) and pipelining (RFC 2449 section 6.6: every
# pipelined line is read and answered in order).
PROXY_FEATURES = ("RESP-CODES", "AUTH-RESP-CODE", "PIPELINING")


def proxy_capabilities(
    *, stls_offered: bool, login_allowed: bool, mechanisms: Sequence[str]
) -> list[bytes]:
    """The proxy's own CAPA body before login (RFC 2449 section 6, RFC 2595 section 4).

    Args:
        stls_offered: STLS is possible now (a starttls listener, TLS not yet active).
        login_allowed: USER and SASL may be used now (TLS active, or plaintext consented to).
        mechanisms: the SASL mechanisms listed after the SASL tag.

    Returns:
        The body lines: the tags of the TRANSACTION verbs (TOP, UIDL), PROXY_FEATURES, then
        the login-phase tags that are usable now, all from ``verbs.VERBS``.
    """
    tags = [f.capa for f in VERBS.values() if f.capa is not None and not _login_only(f)]
    tags += PROXY_FEATURES
    for facts in VERBS.values():
        if facts.capa is None or not _login_only(facts):
            continue
        if stls_offered if facts.name == "STLS" else login_allowed:
            tags.append(" ".join((facts.capa, *mechanisms)) if facts.capa == "SASL" else facts.capa)
    return [tag.encode("ascii") for tag in tags]


def filter_upstream(caps: tuple[Capability, ...]) -> tuple[Capability, ...]:
    """The upstream's capabilities that stay true when seen through the proxy."""
    return tuple(c for c in caps if c.name not in _NEVER_RELAYED)


def render_capa(caps: tuple[Capability, ...]) -> list[bytes]:
    """CAPA body lines (none can start with ".": tags are letters, RFC 2449 section 6)."""
    return [c.render() for c in caps]
