"""Decoding of the SASL mechanisms the proxy accepts from clients (RFC 5034, RFC 4616).

The proxy terminates authentication itself (it must know the user to apply policy and pick an
upstream), so it decodes PLAIN and LOGIN and logs in upstream with the same credentials.
Nothing here logs or keeps the decoded secret beyond the returned value.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass, field

MECHANISMS = ("PLAIN", "LOGIN")

# RFC 4616 section 2: authcid and passwd are 1..255 octets of UTF-8.
MAX_SASL_FIELD = 255


@dataclass(frozen=True, slots=True)
class Credentials:
    """A username and password; ``repr`` never shows the password."""

    username: bytes
    password: bytes = field(repr=False)


def b64decode_response(line: bytes) -> bytes | None:
    """Decode one base64 client line; ``None`` if it is not valid base64 (RFC 5034 s4)."""
    if line == b"=":  # RFC 5034 section 4: "=" is an empty initial response
        return b""
    try:
        return base64.b64decode(line, validate=True)
    except (binascii.Error, ValueError):
        return None


def decode_plain(message: bytes) -> Credentials | None:
    """RFC 4616: [authzid] NUL authcid NUL passwd.  Proxy login: authzid must be empty or equal."""
    parts = message.split(b"\0")
    if len(parts) != 3:
        return None
    authzid, authcid, passwd = parts
    if not authcid or not passwd or authzid not in (b"", authcid):
        return None
    if len(authcid) > MAX_SASL_FIELD or len(passwd) > MAX_SASL_FIELD:
        return None
    return Credentials(authcid, passwd)


def valid_login_field(value: bytes) -> bool:
    """A LOGIN-mechanism username or password we can forward as a USER/PASS argument."""
    return 0 < len(value) <= MAX_SASL_FIELD and not any(c in value for c in b"\0\r\n")


def login_challenge(step: int) -> bytes:
    """The de-facto LOGIN challenges ("Username:", "Password:"), base64 encoded."""
    return base64.b64encode(b"Username:" if step == 0 else b"Password:")
