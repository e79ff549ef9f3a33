"""Replies the proxy writes itself.  Response codes are RFC 2449 section 8 / RFC 3206."""

from __future__ import annotations

import enum

from popproxy.pop3 import limits


class Code(enum.Enum):
    """Extended response codes (RFC 2449 section 8.1, RFC 3206 sections 4-5)."""

    SYS_TEMP = "SYS/TEMP"  # transient problem: the client should retry later
    SYS_PERM = "SYS/PERM"  # permanent problem: retrying as-is will not help
    AUTH = "AUTH"  # credentials were wrong (RFC 3206 section 5)
    IN_USE = "IN-USE"  # mailbox locked by another session (RFC 2449 section 8.1.1)
    LOGIN_DELAY = "LOGIN-DELAY"  # logging in again too soon (RFC 2449 section 8.1.2)


def _line(prefix: bytes, text: str) -> bytes:
    body = text.encode("ascii", "replace").replace(b"\r", b" ").replace(b"\n", b" ")
    line = prefix + b" " + body if body else prefix
    return line[: limits.MAX_STATUS_LINE - 2] + b"\r\n"


def ok(text: str = "") -> bytes:
    return _line(b"+OK", text)


def err(text: str, code: Code | None = None) -> bytes:
    prefix = b"-ERR" if code is None else b"-ERR [" + code.value.encode() + b"]"
    return _line(prefix, text)


def continuation(challenge_b64: bytes = b"") -> bytes:
    """A SASL server challenge line (RFC 5034 section 4): "+" SP base64 CRLF."""
    return b"+ " + challenge_b64 + b"\r\n"


def multiline(status: bytes, lines: list[bytes]) -> bytes:
    """A complete multi-line response (CAPA, AUTH); lines are dot-stuffed (RFC 1939 s3)."""
    stuffed = (b"." + line if line.startswith(b".") else line for line in lines)
    return status + b"".join(line + b"\r\n" for line in stuffed) + b".\r\n"

