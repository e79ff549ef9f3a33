"""The tag's visible marker at the message's exact size (the listing budget, issue 17).

A message listed at the upstream's size before it was judged must be delivered at exactly that
size (RFC 1939 section 5).  A tag normally adds ``X-Popproxy-*`` fields and a Subject prefix,
which grows the message; so a tag judged at RETR is degraded to the equal-length defang
(:mod:`sized_defang`), and this module puts the marker back where there is room: the start of
the top-level Subject's first line is overwritten by the prefix (``scan.subject_prefix``,
"[SUSPICIOUS]" by default), the original words that still fit follow it, and the line is padded
with spaces to its old length.  The words cut are cut at whitespace, so an RFC 2047
encoded-word or a UTF-8 sequence is kept whole or dropped whole, never split (an encoded-word
holds no whitespace, RFC 2047 section 5).  Trailing spaces are allowed in an unstructured field
(RFC 5322 section 3.2.5), and a continuation line of a folded Subject stays as it came.

No Subject, or a first line shorter than the prefix: None, and the caller delivers the defang
without the marker (docs/scanning.md).
"""

from __future__ import annotations

import re

# The Subject field of the header block: its name at a line start (RFC 5322 section 2.2:
# field names are case-insensitive) and the rest of that physical line.
_SUBJECT = re.compile(rb"(?im)^subject:([^\r\n]*)")
_HEADER_END = re.compile(rb"\r?\n\r?\n")


def mark_subject(message: bytes, prefix: str) -> bytes | None:
    """``message`` with ``prefix`` at the start of its Subject, exactly as long; None when it
    has no Subject line with room for the prefix (or ``prefix`` is empty)."""
    marker = b" " + prefix.encode("ascii", "replace")
    if marker == b" ":
        return None
    end = _HEADER_END.search(message)
    head_end = end.start() if end else len(message)
    found = _SUBJECT.search(message, 0, head_end)
    if found is None:
        return None
    value = found.group(1)
    room = len(value)
    if room < len(marker):
        return None
    kept = b""
    for word in value.split():
        if len(marker) + len(kept) + 1 + len(word) > room:
            break
        kept += b" " + word
    new = (marker + kept).ljust(room, b" ")
    return message[: found.start(1)] + new + message[found.end(1):]
