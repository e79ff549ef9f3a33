"""A multipart body split at the delimiter lines of a boundary guessed from the body itself:
what a lenient client shows of a multipart whose declared boundary is missing or unused."""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RecoveredMultipart:
    """A multipart body split at the delimiter lines of a boundary guessed from the body.

    Attributes:
        boundary: the guessed boundary (the first ``--xxx`` line without its dashes).
        preamble: the text before the first delimiter, None when there is none.
        parts: the raw body parts, each still with its own header block.
        epilogue: the text after the close delimiter, None when there is no close delimiter.
        truncated: more parts followed than were asked for (they are not in ``parts``).
    """

    boundary: bytes
    preamble: bytes | None
    parts: list[bytes]
    epilogue: bytes | None
    truncated: bool


# The first line "--xxx" (xxx not blank; trailing blanks are transport padding, RFC 2046).  Lines
# end at CRLF, CR or LF, as for the parser.  Regular expressions keep the split linear and
# allocation-free on hostile bodies (millions of empty lines).
_LINE_START = rb"(?:\A|(?<=[\r\n]))"
_FIRST_DELIMITER = re.compile(_LINE_START + rb"--([^\r\n]*[^\r\n \t])[ \t]*(?=[\r\n]|\Z)")


def _chop_eol(data: bytes) -> bytes:
    """Remove one final line ending: the one before a delimiter belongs to the delimiter."""
    if data.endswith(b"\r\n"):
        return data[:-2]
    return data[:-1] if data[-1:] in (b"\r", b"\n") else data


def recover_multipart(body: bytes, max_parts: int) -> RecoveredMultipart | None:
    """Split the body of a multipart whose boundary is missing or never occurs.

    The parser keeps such a body as one opaque text, but a lenient mail client may still find
    the parts in it, so the scanner has to look inside too.  The boundary is taken from the
    first line starting with ``--`` followed by something; the body is then split like the
    parser splits a multipart (delimiter lines ``--boundary``, close line ``--boundary--``,
    trailing blanks allowed, lines ending at CRLF, CR or LF).

    Args:
        body: the body of the multipart (its transfer encoding removed).
        max_parts: at most this many parts are split off; ``truncated`` tells if more followed.

    Returns:
        None when no line can be a delimiter.
    """
    first = _FIRST_DELIMITER.search(body)
    if first is None:
        return None
    boundary = first.group(1)
    delimiter = re.compile(
        _LINE_START + b"--" + re.escape(boundary) + rb"(--)?[ \t]*(?:\r\n|\r|\n|\Z)"
    )
    spans, epilogue, truncated = _part_spans(body, delimiter, first.start(), max_parts)
    # Each part loses its last line ending (the one before a delimiter belongs to it; the
    # parser drops it at the end of the body as well).
    return RecoveredMultipart(
        boundary=boundary,
        preamble=_chop_eol(body[: first.start()]) if first.start() else None,
        parts=[_chop_eol(body[start:end]) for start, end in spans],
        epilogue=epilogue,
        truncated=truncated,
    )


def _part_spans(
    body: bytes, delimiter: re.Pattern[bytes], start: int, max_parts: int
) -> tuple[list[tuple[int, int]], bytes | None, bool]:
    """The (start, end) of each part's content between the delimiter lines from ``start`` on,
    the epilogue (None without a close delimiter), and whether parts past ``max_parts`` were
    left out."""
    spans: list[tuple[int, int]] = []
    after_delimiter = -1
    for match in delimiter.finditer(body, start):
        if match.start() == after_delimiter:
            # Like the parser: delimiter lines (even a close one) right after a delimiter
            # line are swallowed by it; there is no empty part between them.
            after_delimiter = match.end()
            spans[-1] = (after_delimiter, len(body))
            continue
        if spans:
            spans[-1] = (spans[-1][0], match.start())
        if match.group(1):  # the close delimiter
            return spans, body[match.end() :], False
        if len(spans) == max_parts:
            return spans, None, True
        spans.append((match.end(), len(body)))
        after_delimiter = match.end()
    return spans, None, False
