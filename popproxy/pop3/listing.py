"""UIDL and LIST listings (RFC 1939 sections 5 and 7), parsed as they arrive, within bounds.

A listing is read line by line, so a session holds the parsed entries and at most one
partial line, never the whole answer as well: an upstream that answers UIDL with millions
of short lines costs the entries, not several copies of its bytes.
"""

from __future__ import annotations

from collections.abc import Iterable

from popproxy.pop3.errors import RemoteProtocolError
from popproxy.pop3.framing import Unstuffer
from popproxy.pop3.limits import MAX_STATUS_LINE

# RFC 2449 section 4: response lines are at most 512 octets, CRLF included (a unique-id is
# 1-70 characters, RFC 1939 section 7, so real lines are far shorter).
MAX_LISTING_LINE = MAX_STATUS_LINE
# A maildrop of a million messages is past what any POP3 client lists; the bound keeps a
# session's listing under ~150 MB whatever the upstream sends.
MAX_LISTING_ENTRIES = 1_000_000


class ListingReader:
    """Feed unstuffed body bytes in any chunking; ``finish`` returns ``{number: value}``.

    Lines that are not ``number SP value`` are skipped, as clients skip them.  ``feed`` and
    ``finish`` raise ``RemoteProtocolError`` past a bound (the caller drops the connection).
    """

    __slots__ = ("_entries", "_max_entries", "_max_line", "_partial")

    def __init__(self, max_line: int = MAX_LISTING_LINE,
                 max_entries: int = MAX_LISTING_ENTRIES) -> None:
        self._entries: dict[int, bytes] = {}
        self._partial = b""
        self._max_line = max_line
        self._max_entries = max_entries

    def feed(self, data: bytes) -> None:
        lines = (self._partial + data).split(b"\r\n")
        self._partial = lines.pop()
        if len(self._partial) > self._max_line:
            raise RemoteProtocolError(f"listing line over {self._max_line} octets")
        self._add(lines)

    def finish(self) -> dict[int, bytes]:
        if self._partial:
            self._add((self._partial,))
            self._partial = b""
        return self._entries

    def _add(self, lines: Iterable[bytes]) -> None:
        # One loop over a chunk's lines, not a method call per line (issue 18: a login's
        # UIDL and LIST are a dozen lines).
        entries, max_line, max_entries = self._entries, self._max_line, self._max_entries
        for line in lines:
            if len(line) > max_line:
                raise RemoteProtocolError(f"listing line over {max_line} octets")
            number, _, value = line.partition(b" ")
            if not (number.isdigit() and value):
                continue
            if len(entries) >= max_entries:
                raise RemoteProtocolError(f"listing over {max_entries} entries")
            entries[int(number)] = value.strip()


def parse_listing(body: bytes) -> dict[int, bytes]:
    """A whole listing body as the framer holds it (still dot-stuffed, terminator cut off):
    what ``ListingReader`` returns for it, within the same bounds.

    One loop over its lines when the body is shorter than one line's bound (so no line can
    pass it, nor the entries theirs) and no line starts with "." (nothing to unstuff, RFC 1939
    section 3): every login's UIDL and LIST of a small mailbox (issue 18).  Otherwise the
    reader's general path.
    """
    if len(body) <= MAX_LISTING_LINE and body[:1] != b"." and b"\r\n." not in body:
        entries: dict[int, bytes] = {}
        for line in body.split(b"\r\n"):
            number, _, value = line.partition(b" ")
            if number.isdigit() and value:
                entries[int(number)] = value.strip()
        return entries
    reader = ListingReader()
    reader.feed(Unstuffer().feed(body))
    return reader.finish()
