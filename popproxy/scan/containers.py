"""What is inside an attachment: zip members, attached messages (also Outlook .msg files),
invites, Office relationships, compressed SVG, and the links of text and markup files.

:func:`open_container` looks at one attachment (or inline non-body part) and returns the links
and signals found in it, plus what has to be judged in turn like an attachment of its own:
members of a zip archive and the decompressed form of an ``.svgz`` (``parts``), or a whole mail
message attached under any type (``message``: an ``.eml`` sent as application/octet-stream, or
content that reads as a message), which the scanner walks as a nested message within the MIME
depth and part limits.  Its text is searched for links as well (``texts``).

Zip archives are read by :mod:`.zips`, with its hard limits; the budgets of one message are
kept in a :class:`~popproxy.scan.zips.ContainerBudget`.  A limit reached is reported as
``limit-container`` (weighted to tag, as every ``limit-*`` signal): padding a container past a
limit must not make it cleaner.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Callable

from popproxy.scan import invites, outlook
from popproxy.scan.mime import Part
from popproxy.scan.sniff import MARKUP_EXTENSIONS, active_markup, as_text, extension
from popproxy.scan.zips import (
    MAX_CONTAINER_BYTES,
    MAX_MEMBER_BYTES,
    MAX_NESTING,
    TEXT_EXTENSIONS,
    ContainerBudget,
    Opened,
    judge_member,
    member_part,
    open_zip,
)

# Calendar bytes parsed per message (invites.MAX_CALENDAR_BYTES each): an invite or two per
# message is usual; past this, invites are read as text only.
MAX_CALENDAR_BYTES_PER_MESSAGE = 1024 * 1024

# Bytes looked at to tell whether an attachment is a mail message.
_SNIFF_BYTES = 8 * 1024
# Bytes looked at for markup in an attachment of another type.  Browsers sniff the first 1,445
# (WHATWG MIME Sniffing, "resource header"); more leaves room for a preamble, and a whole
# 30 MB image searched for "<script" would cost a good part of a second.
_MARKUP_SNIFF_BYTES = 64 * 1024

_MESSAGE_TYPES = frozenset({"message/rfc822", "message/global", "application/x-eml"})
_CALENDAR_TYPES = frozenset({"text/calendar", "application/ics", "text/x-vcalendar"})
_CALENDAR_EXTENSIONS = frozenset({"ics", "ical", "icalendar", "ifb", "vcs"})
_SVG_TYPES = frozenset({"image/svg+xml"})
_PAGE_TYPES = frozenset({"image/svg+xml", "application/xhtml+xml"})
_SVG_NAMESPACE = "www.w3.org/2000/svg"
_TEXT_TYPES = frozenset({"application/json", "application/xml", "application/rtf",
                         "application/csv", "text/x-vcard"})
_ZIP_MAGIC = b"PK\x03\x04"
_GZIP_MAGIC = b"\x1f\x8b"
# The header fields of a mail message (RFC 5322): an attachment whose first lines are these
# is a message, whatever its declared type.
_MAIL_FIELDS = frozenset({"to", "subject", "date", "message-id", "received", "mime-version",
                          "return-path", "reply-to", "cc", "delivered-to", "content-type"})
_MIN_MAIL_FIELDS = 3
_HEADERS_ONLY = "text/rfc822-headers"
# A field name (printable ASCII but ":", RFC 5322 section 3.6.8) and its colon.  The look-behind
# keeps a search linear: a name is tried from the start of a run of name characters only.
_FIELD = re.compile(rb"(?<![\x21-\x39\x3b-\x7e])([\x21-\x39\x3b-\x7e]{1,76}+)[ \t]*+:")


def open_container(
    part: Part, budget: ContainerBudget, level: int, check: Callable[[], None]
) -> Opened:
    """The links, signals and inner parts of one attachment.

    Args:
        part: the attachment.
        budget: the message's container budget, charged here.
        level: containers this part is inside of (0: an attachment of the message itself).
        check: the scan's time-budget checkpoint.
    """
    out = Opened()
    data, kind, ext = part.payload, part.content_type, extension(part.filename)
    label = part.filename or kind
    if _is_message(data, kind, ext):
        if level >= MAX_NESTING:
            out.limit(f"{label}: nested {level} deep")
        else:
            out.message = data
    elif outlook.is_msg(data, kind, ext):
        _outlook(data, label, budget, level, check, out)
    elif kind in _CALENDAR_TYPES or ext in _CALENDAR_EXTENSIONS or invites.is_calendar(data):
        room = MAX_CALENDAR_BYTES_PER_MESSAGE - budget.calendar_bytes
        found = invites.calendar_links(data, part.charset, check, room)
        budget.calendar_bytes += 0 if found.limited else len(data)
        out.links.extend(found.links)
        if found.limited:
            out.limit(f"{label}: calendar read as text")
    elif data.startswith(_ZIP_MAGIC):
        open_zip(part, label, budget, level, check, out)
    elif data.startswith(_GZIP_MAGIC) and (ext == "svgz" or kind in _SVG_TYPES):
        _svgz(part, label, budget, out)
    elif _is_text(part, kind, ext):
        # Text files, and markup under any type or name: the source is searched for URLs,
        # the scripts of a page or SVG too (they are no visible text, so the page's own
        # extraction skips the URLs a script navigates to).
        out.texts.append(as_text(data, part.charset))
        page = _sniffed_page(part, kind, ext)
        if page is not None and level < MAX_NESTING:
            # A page or SVG sent under another type and name (application/octet-stream,
            # "invoice"): a browser sniffs and renders it, so it is judged as the page it is.
            out.parts.append(member_part(part, part.filename, page, data))
    return out


def _sniffed_page(part: Part, kind: str, ext: str) -> str | None:
    """The type of markup content declared as something else (None: not markup, or declared)."""
    if kind in _PAGE_TYPES or kind.startswith("text/") or ext in MARKUP_EXTENSIONS:
        return None
    head = part.payload[:_MARKUP_SNIFF_BYTES]
    if active_markup(head, kind, [part.filename]) != "content":
        return None
    return "image/svg+xml" if _SVG_NAMESPACE in as_text(head, part.charset) else "text/html"


def _is_text(part: Part, kind: str, ext: str) -> bool:
    if kind.startswith("text/") or kind in _TEXT_TYPES or ext in TEXT_EXTENSIONS:
        return True
    return active_markup(part.payload[:_MARKUP_SNIFF_BYTES], kind, [part.filename]) is not None


def _is_message(data: bytes, kind: str, ext: str) -> bool:
    if kind in _MESSAGE_TYPES or ext == "eml":
        return True
    # A bounce's copy of the original header block (RFC 6522) has no body to judge.
    if kind == _HEADERS_ONLY or data.startswith((_ZIP_MAGIC, b"%PDF", _GZIP_MAGIC)):
        return False
    return looks_like_message(data)


def looks_like_message(data: bytes) -> bool:
    """The head of ``data`` is a mail header: field lines with From and at least two of the
    other message fields, up to the first blank line."""
    head = data[:_SNIFF_BYTES]
    if head.startswith(b"From "):  # an mbox separator line
        head = head.partition(b"\n")[2]
    names: set[str] = set()
    for line in head.splitlines():
        if not line.strip():
            break
        if line[:1] in (b" ", b"\t"):
            continue  # a folded continuation
        m = _FIELD.match(line)
        if m is None:
            return False
        names.add(m.group(1).decode("ascii").lower())
    return "from" in names and len(names & _MAIL_FIELDS) >= _MIN_MAIL_FIELDS - 1


def _outlook(
    data: bytes, label: str, budget: ContainerBudget, level: int, check: Callable[[], None],
    out: Opened,
) -> None:
    """An Outlook .msg file, walked as the attached message it is (see :mod:`.outlook`)."""
    if level >= MAX_NESTING:
        out.limit(f"{label}: nested {level} deep")
        return
    found = outlook.read_msg(data, MAX_CONTAINER_BYTES - budget.bytes, check)
    if found is None:
        return  # a file Outlook cannot open either; its name was judged already
    budget.bytes += found.bytes_read
    if found.limited:
        out.limit(f"{label}: message file read in part")
    out.message = outlook.as_message(found)


def _svgz(part: Part, label: str, budget: ContainerBudget, out: Opened) -> None:
    """A gzip-compressed SVG, decompressed within the member limits, judged as SVG."""
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    room = min(MAX_MEMBER_BYTES, MAX_CONTAINER_BYTES - budget.bytes)
    try:
        data = inflater.decompress(part.payload, room + 1)
    except zlib.error:
        return
    if len(data) > room:
        out.limit(f"{label}: over {room} bytes decompressed")
        data = data[:room]
    budget.bytes += len(data)
    name = part.filename[:-1] if part.filename.lower().endswith(".svgz") else part.filename
    judge_member(part, name or "image.svg", "image/svg+xml", data, label, budget, out)


