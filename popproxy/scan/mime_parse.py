"""Message bytes -> the stdlib's parse tree, within what the parser itself can afford.

The stdlib parser (compat32 policy: the fastest, and it never raises on malformed input) builds
the tree that :mod:`.mime` walks and :mod:`.defang` rewrites.  Two structures cost it too much
(see :func:`parse_message`); such a message is parsed for its header only and marked
:class:`Unparsed`.
"""

from __future__ import annotations

import email.errors
import email.parser
import email.policy
from email.message import Message

from popproxy.scan.limits import MAX_PARSE_DELIMITERS
from popproxy.scan.mime_params import install as install_linear_param_parser

# The stdlib's MIME parameter splitter is quadratic in the header's length, and every reader of
# a message (scanner and defang alike, both through this module) asks hostile headers for their
# charset, boundary and file name: see mime_params.
install_linear_param_parser()

_PARSER = email.parser.BytesParser(policy=email.policy.compat32)


class Unparsed(email.errors.MessageDefect):
    """The message's structure was not parsed (see :func:`parse_message`); ``limit`` says why."""

    def __init__(self, limit: str) -> None:
        super().__init__(limit)
        self.limit = limit


def parse_message(data: bytes) -> Message:
    """Parse message bytes (never raises on malformed MIME; defects are recorded instead).

    Two structures are too costly for the stdlib parser, so such a message is parsed for its
    header only; its body stays one text, marked :class:`Unparsed`, which the walk reads as text
    and as HTML (every link not hidden by a transfer encoding) and reports as a limit:

    - "parts": more than MAX_PARSE_DELIMITERS lines that can be MIME delimiters (the parser
      costs ~25 us per part, so 350,000 tiny parts in 16 MiB took 8 s before any rule ran);
    - "depth": the parser recurses a few frames per multipart level, so a few hundred nested
      multiparts exhaust Python's stack (RecursionError).  Not re-parsed level by level: each
      failed attempt costs a parse of the whole message.
    """
    if data.count(b"\n--") + data.count(b"\r--") > MAX_PARSE_DELIMITERS:
        return _header_only(data, "parts")
    try:
        return _PARSER.parsebytes(data)
    except RecursionError:
        return _header_only(data, "depth")


def _header_only(data: bytes, limit: str) -> Message:
    msg = _PARSER.parsebytes(data, headersonly=True)
    msg.defects.append(Unparsed(limit))
    return msg


def unparsed_limit(node: Message) -> str | None:
    """The limit for which ``node`` was left unparsed, or None."""
    return next((d.limit for d in node.defects if isinstance(d, Unparsed)), None)
