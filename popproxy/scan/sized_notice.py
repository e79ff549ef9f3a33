"""The quarantine notice at a size the client was already told (RFC 1939 section 5).

A message listed at the upstream's size before it was judged, and judged at RETR to be held
(or one whose size-preserving defang is impossible), is replaced by our notice padded to
exactly the listed octets.  The notice is a valid RFC 5322 message (From and Date, section
3.6); the padding is body lines of ``~`` (no line starts with ``.``, so dot-stuffing adds
nothing on the wire either, though the count is of the unstuffed message as RFC 1939 counts
it) with CRLF line ends, each at most ``PAD_LINE`` characters (RFC 5322 section 2.1.1: 78
recommended, 998 at most).

A message smaller than the notice gets a short one (From, Date, Subject, the id: 150 octets);
one smaller still (too small to carry much) a header block of ``X-Popproxy-Held`` filler and
blank lines only: nothing of the original, exact size.
"""

from __future__ import annotations

import time

# Characters of one padding line (plus CRLF: 78 octets, RFC 5322's recommended line length).
PAD_LINE = 76
# What pads: not ".", so the padding is never dot-stuffed.
PAD_CHAR = b"~"


def _notices(quarantine_id: str, scanned_at: float) -> tuple[bytes, bytes]:
    """(the notice, a short one for small messages): plain US-ASCII text, the MIME default
    (RFC 2045 section 5.2), so no MIME fields are needed."""
    when = time.strftime("%a, %d %b %Y %H:%M:%S +0000", time.gmtime(scanned_at))
    ident = quarantine_id.encode("ascii", "replace")
    head = b"From: popproxy <postmaster@localhost>\r\nDate: " + when.encode() + b"\r\n"
    full = (head + b"Subject: [QUARANTINED] a message was held\r\n"
            b"X-Popproxy-Verdict: quarantine\r\n\r\n"
            b"A message was held by the mail security proxy.\r\nQuarantine id: " + ident
            + b"\r\nThe lines below only keep the size your mail program was told.\r\n")
    short = head + b"Subject: [QUARANTINED] held\r\n\r\nHeld by the mail proxy: " + ident + b"\r\n"
    return full, short


def padding(octets: int) -> bytes:
    """``octets`` of CRLF-terminated filler lines (``octets`` >= 2, or 0)."""
    if octets == 0:
        return b""
    if octets < 2:
        raise ValueError("a line needs at least 2 octets")
    full, rest = divmod(octets, PAD_LINE + 2)
    lines = [PAD_CHAR * PAD_LINE + b"\r\n"] * full
    if rest == 1:  # no line is 1 octet: the last full line grows by one
        lines[-1] = PAD_CHAR * (PAD_LINE + 1) + b"\r\n"
    elif rest:
        lines.append(PAD_CHAR * (rest - 2) + b"\r\n")
    return b"".join(lines)


def padded_notice(quarantine_id: str, scanned_at: float, size: int) -> bytes:
    """Our quarantine notice of exactly ``size`` octets (``size`` >= 0): the longest form that
    fits, padded."""
    for notice in _notices(quarantine_id, scanned_at):
        filler = size - len(notice)
        if filler == 1:  # one octet more than the notice: a space before its last CRLF
            return notice[:-2] + b" \r\n"
        if filler >= 0:
            return notice + padding(filler)
    return _tiny(size)


def _tiny(size: int) -> bytes:
    """A header-only message of ``size`` octets (smaller than the notice)."""
    field = b"X-Popproxy-Held: quarantine"
    if size >= len(field) + 2:
        return field + b" " * (size - len(field) - 2) + b"\r\n"
    return b"\r\n" * (size // 2) + b" " * (size % 2)
