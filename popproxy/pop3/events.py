"""Events produced by the sans-io parsers: small frozen values, wire data kept as bytes."""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Need(enum.Enum):
    """Sentinel returned by ``next_event`` when more bytes are required."""

    DATA = "need-data"


NEED_DATA = Need.DATA


@dataclass(frozen=True, slots=True)
class Command:
    """One well-formed client command line.

    ``verb`` is upper-cased ASCII (RFC 1939 section 3: keywords are case-insensitive);
    ``args`` are the space-separated arguments as received, except for PASS whose single
    argument is the rest of the line (RFC 1939 section 7 allows spaces in passwords).
    """

    verb: str
    args: tuple[bytes, ...] = ()

    def render(self) -> bytes:
        """Canonical wire form: the upstream only ever sees lines we re-serialised."""
        return b" ".join((self.verb.encode("ascii"), *self.args)) + b"\r\n"


class BadLine(enum.Enum):
    """Why a client line was refused (each has one defined answer, see ``replies``)."""

    TOO_LONG = "line too long"
    NUL_BYTE = "NUL byte in command"
    BAD_VERB = "command keyword is not 3-4 ASCII letters"
    EMPTY = "empty command line"
    BAD_SYNTAX = "malformed arguments"


@dataclass(frozen=True, slots=True)
class BadCommand:
    """A client line that was refused; the parser stays usable afterwards."""

    reason: BadLine


@dataclass(frozen=True, slots=True)
class SaslResponse:
    """One client line inside an AUTH exchange (RFC 5034 section 4), without CRLF."""

    data: bytes


@dataclass(frozen=True, slots=True)
class ConnectionClosed:
    """The peer closed its side (``receive_data(b"")``)."""


@dataclass(frozen=True, slots=True)
class StatusLine:
    """An upstream status line, raw bytes including CRLF.

    ``kind`` is ``+OK`` or ``-ERR``.
    ``multiline`` is true when a body follows (only for ``+OK`` to a multi-line command).
    """

    kind: str
    raw: bytes
    multiline: bool

    @property
    def ok(self) -> bool:
        return self.kind == "+OK"

    @property
    def text(self) -> bytes:
        """The human-readable part after the indicator, without CRLF."""
        return self.raw[len(self.kind) :].strip()


@dataclass(frozen=True, slots=True)
class BodyData:
    """A slice of a multi-line body, still dot-stuffed exactly as it was on the wire."""

    data: bytes


@dataclass(frozen=True, slots=True)
class EndOfBody:
    """The ``.CRLF`` terminator of a multi-line response was consumed."""


ClientEvent = Command | BadCommand | SaslResponse | ConnectionClosed
ServerEvent = StatusLine | BodyData | EndOfBody | ConnectionClosed
