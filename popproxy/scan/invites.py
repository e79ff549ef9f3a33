"""Links of calendar invites (iCalendar, RFC 5545: ``.ics`` / ``text/calendar``).

A calendar invite shows its location, description and URL in the reader's calendar, outside
the mail client, and phishing puts its link there ("join the meeting", "review the document").
The invite is parsed by ``icalendar`` (folded lines, escapes, parameters as clients read them);
each property a calendar shows as a link or as text is searched: URL, ATTACH and CONFERENCE are
links, DESCRIPTION, LOCATION, SUMMARY and COMMENT are text with URLs in it, and Outlook's HTML
description (X-ALT-DESC) is HTML.  The unfolded text as a whole is searched for URLs as well.

icalendar is pure Python (~60 us per line), so an invite bigger than MAX_CALENDAR_BYTES, with
more than MAX_CALENDAR_LINES content lines or MAX_CALENDAR_PARAMS parameters is not parsed: only
its unfolded text is searched, and the result says ``limited`` (the scanner reports
``limit-container``).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

import icalendar

from popproxy.scan.extract import Link, html_extract, text_links
from popproxy.scan.textdecode import decode_bytes

# Bytes of an invite parsed.  Outlook and Google invites with an HTML description and a long
# attendee list stay under 100 KB.  icalendar costs up to ~3 us a byte on hostile shapes (one
# line of 200,000 parameters: 3.4 s a megabyte), so 256 KiB bounds a parse to well under a second.
MAX_CALENDAR_BYTES = 256 * 1024

# Unfolded content lines parsed (icalendar costs ~60 us a line: 2,000 are ~0.1 s).  A meeting
# with a hundred attendees has a few hundred lines.
MAX_CALENDAR_LINES = 2000

# Parameter separators (";") in an invite: parameters are icalendar's costliest part (~13 us
# each); a real invite has a few per line (CN=, ROLE=, PARTSTAT= of each attendee).
MAX_CALENDAR_PARAMS = 10_000

# Properties a calendar client shows as a link, or as text it makes links of.
_LINK_PROPERTIES = frozenset({"URL", "ATTACH", "CONFERENCE", "X-GOOGLE-CONFERENCE"})
_TEXT_PROPERTIES = frozenset({"DESCRIPTION", "LOCATION", "SUMMARY", "COMMENT"})
_HTML_PROPERTIES = frozenset({"X-ALT-DESC"})

# RFC 5545 section 3.1: a line break followed by one space or tab continues the line.
_FOLD = re.compile(r"\r\n[ \t]|\n[ \t]|\r[ \t]")

_CALENDAR_START = b"BEGIN:VCALENDAR"


@dataclass(slots=True)
class CalendarLinks:
    """The links of one invite; ``limited`` when it was too big to parse (read as text)."""

    links: list[Link] = field(default_factory=list)
    limited: bool = False


def is_calendar(data: bytes) -> bool:
    """Content that starts as an iCalendar object (after a BOM and blank lines)."""
    head = data[:64].lstrip(b"\xef\xbb\xbf \t\r\n")
    return head[: len(_CALENDAR_START)].upper() == _CALENDAR_START


def calendar_links(
    data: bytes,
    charset: str | None,
    check: Callable[[], None],
    max_bytes: int = MAX_CALENDAR_BYTES,
) -> CalendarLinks:
    """Every link an invite shows: parsed when within the limits, else read as text.

    ``max_bytes`` (at most MAX_CALENDAR_BYTES) is what is left of the message's parse budget:
    a message of a hundred invites must not cost a hundred parses.
    """
    text = _FOLD.sub("", decode_bytes(data, charset or "utf-8"))
    # The whole unfolded text is searched for URLs in any case: a client may show what the
    # parser drops (an invite never ended, a property of a made-up name), and over-reading
    # costs one linear pass.
    out = CalendarLinks(links=text_links(text, attachment=True))
    if (
        len(data) > min(max_bytes, MAX_CALENDAR_BYTES)
        or text.count("\n") > MAX_CALENDAR_LINES
        or text.count(";") > MAX_CALENDAR_PARAMS
    ):
        out.limited = True
        return out
    try:
        calendars = icalendar.Calendar.from_ical(text, multiple=True)
    except (ValueError, KeyError, TypeError, IndexError):
        return out  # no invite a client would read either: its text was searched above
    for calendar in calendars:
        for component in calendar.walk():
            check()
            for name, value in component.property_items(recursive=False):
                _property_links(name, value, out.links)
    return out


def _property_links(name: str, value: object, links: list[Link]) -> None:
    if name in _LINK_PROPERTIES:
        if isinstance(value, icalendar.vUri):
            links.append(Link(str(value), "href", attachment=True))
        elif isinstance(value, (icalendar.vText, str)):
            # A property whose value type was not declared URI: its URLs as text.
            links.extend(text_links(str(value), attachment=True))
    elif name in _TEXT_PROPERTIES:
        links.extend(text_links(str(value), attachment=True))
    elif name in _HTML_PROPERTIES:
        raw = value.to_ical() if hasattr(value, "to_ical") else value
        html = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
        links.extend(html_extract(html, attachment=True).links)
