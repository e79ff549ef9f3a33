"""What is inside an attachment: zip members, attached messages, invites, Office relationships,
compressed SVG, and the links of text and markup files.

:func:`open_container` looks at one attachment (or inline non-body part) and returns the links
and signals found in it, plus what has to be judged in turn like an attachment of its own:
members of a zip archive and the decompressed form of an ``.svgz`` (``parts``), or a whole mail
message attached under any type (``message``: an ``.eml`` sent as application/octet-stream, or
content that reads as a message), which the scanner walks as a nested message within the MIME
depth and part limits.  Its text is searched for links as well (``texts``).

Archives are read with hard limits (each a constant below): members read per message, bytes
decompressed per member and per message, nesting of containers; a zip bomb costs at most
MAX_MEMBER_BYTES of memory.  A limit reached is reported as ``limit-container`` (weighted to tag,
as every ``limit-*`` signal): padding an archive past a limit must not make it cleaner.
"""

from __future__ import annotations

import io
import re
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field

from popproxy.scan import invites, ooxml
from popproxy.scan.extract import Link
from popproxy.scan.mime import Part
from popproxy.scan.sniff import MARKUP_EXTENSIONS, active_markup, as_text, extension
from popproxy.scan.verdict import Signal, clean_detail
from popproxy.scan.weights import weight

# Archive members decompressed per message (all archives together).  A zip of invoices or
# photos has a few dozen; only members of the kinds below are read at all.
MAX_MEMBERS_READ = 100

# Bytes decompressed from one member.  Read in chunks and stopped here, so a member that
# inflates to gigabytes (a zip bomb) costs this much memory and time at most.
MAX_MEMBER_BYTES = 4 * 1024 * 1024

# Bytes decompressed from archive members per message (all members together): twice the largest
# member.  Everything decompressed is at least searched for URLs (~0.1-0.2 us a byte on hostile
# text), and a few kilobytes of zip inflate to this much, so it bounds that cost to ~1.5 s.
MAX_CONTAINER_BYTES = 8 * 1024 * 1024

# Containers opened inside containers: a zip in a zip (or a message in a zip) is opened, one
# level further is not.  Mail has a zip of a folder of zips at most; deeper nests are built to
# tire scanners out.
MAX_NESTING = 2

# Bytes of a zip's central directory (its list of members, ~46 bytes plus the name for each):
# zipfile builds an object per entry before any member is read, so a directory of millions of
# entries would cost memory in proportion.  2 MiB is ~20,000 members.
MAX_CENTRAL_DIRECTORY_BYTES = 2 * 1024 * 1024

# Archives (zip files, Office documents) opened per message.  Opening one reads its whole member
# list (up to MAX_CENTRAL_DIRECTORY_BYTES); a message of hundreds of archives is built to cost.
MAX_ARCHIVES_OPENED = 50

# Calendar bytes parsed per message (invites.MAX_CALENDAR_BYTES each): an invite or two per
# message is usual; past this, invites are read as text only.
MAX_CALENDAR_BYTES_PER_MESSAGE = 1024 * 1024

# Member bytes per message, by the type they are judged as, for kinds that cost more than a
# linear pass: markup (HTML, SVG, attached messages) is measured and parsed into a tree (up to
# ~1-2 us a byte on hostile shapes: a 30 KB zip of "<p>" * 1,000,000 members cost seconds), and
# text is searched by the URL pattern (~0.2 us a byte at worst).  Past them, a member's source
# is searched for URLs only (and the message gets limit-container).
_KIND_GROUPS = {
    "text/html": "markup", "image/svg+xml": "markup", "message/rfc822": "markup",
    "text/plain": "text",
}
_GROUP_BUDGETS = {"markup": 1024 * 1024, "text": 4 * 1024 * 1024}

# Bytes read at once from a member, between two checks of the scan's time budget.
_READ_CHUNK = 1024 * 1024

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
_TEXT_EXTENSIONS = frozenset({"txt", "text", "csv", "tsv", "log", "md", "json", "xml", "rtf",
                              "url", "webloc", "website", "ini", "vcf"})
# Zip members read, by extension, and the type they are judged as.  Executables are judged
# by name already (attach-archive-executable); these are the kinds that carry links.
_MEMBER_TYPES = {
    "eml": "message/rfc822",
    "ics": "text/calendar", "ical": "text/calendar", "ifb": "text/calendar",
    "svg": "image/svg+xml", "svgz": "image/svg+xml",
    "htm": "text/html", "html": "text/html", "shtml": "text/html", "xhtml": "text/html",
    "hta": "text/html", "mht": "text/html", "mhtml": "text/html",
    "pdf": "application/pdf",
    "zip": "application/zip",
    "docx": "application/octet-stream", "docm": "application/octet-stream",
    "dotx": "application/octet-stream", "dotm": "application/octet-stream",
    "xlsx": "application/octet-stream", "xlsm": "application/octet-stream",
    "pptx": "application/octet-stream", "pptm": "application/octet-stream",
    **{ext: "text/plain" for ext in _TEXT_EXTENSIONS},
}
_ZIP_MAGIC = b"PK\x03\x04"
_GZIP_MAGIC = b"\x1f\x8b"
_EOCD = b"PK\x05\x06"
_EOCD_SIZE = 22
# The header fields of a mail message (RFC 5322): an attachment whose first lines are these
# is a message, whatever its declared type.
_MAIL_FIELDS = frozenset({"to", "subject", "date", "message-id", "received", "mime-version",
                          "return-path", "reply-to", "cc", "delivered-to", "content-type"})
_MIN_MAIL_FIELDS = 3
_HEADERS_ONLY = "text/rfc822-headers"
# A field name (printable ASCII but ":", RFC 5322 section 3.6.8) and its colon.  The look-behind
# keeps a search linear: a name is tried from the start of a run of name characters only.
_FIELD = re.compile(rb"(?<![\x21-\x39\x3b-\x7e])([\x21-\x39\x3b-\x7e]{1,76}+)[ \t]*+:")


@dataclass(slots=True)
class ContainerBudget:
    """What the containers of one message have used of the limits above."""

    members: int = 0
    bytes: int = 0
    archives: int = 0
    calendar_bytes: int = 0
    by_group: dict[str, int] = field(default_factory=dict)  # member bytes per _GROUP_BUDGETS


@dataclass(slots=True)
class Opened:
    """What one attachment holds (see the module docstring)."""

    signals: list[Signal] = field(default_factory=list)
    links: list[Link] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)
    parts: list[Part] = field(default_factory=list)
    message: bytes | None = None

    def limit(self, detail: str) -> None:
        self.signals.append(_sig("limit-container", detail))


def _sig(name: str, detail: str) -> Signal:
    return Signal(name=name, weight=weight(name), detail=clean_detail(detail))


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
    elif kind in _CALENDAR_TYPES or ext in _CALENDAR_EXTENSIONS or invites.is_calendar(data):
        room = MAX_CALENDAR_BYTES_PER_MESSAGE - budget.calendar_bytes
        found = invites.calendar_links(data, part.charset, check, room)
        budget.calendar_bytes += 0 if found.limited else len(data)
        out.links.extend(found.links)
        if found.limited:
            out.limit(f"{label}: calendar read as text")
    elif data.startswith(_ZIP_MAGIC):
        _zip(part, label, budget, level, check, out)
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
            out.parts.append(_member(part, part.filename, page, data))
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
    if kind.startswith("text/") or kind in _TEXT_TYPES or ext in _TEXT_EXTENSIONS:
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
    _judge_member(part, name or "image.svg", "image/svg+xml", data, label, budget, out)


def _member(parent: Part, name: str, content_type: str, data: bytes) -> Part:
    return Part(content_type=content_type, filename=name, attachment=True, payload=data,
                charset=None, depth=parent.depth)


_ZIP_ERRORS = (zipfile.BadZipFile, zipfile.LargeZipFile, RuntimeError, NotImplementedError,
               OSError, EOFError, ValueError, zlib.error, LookupError)


def _zip(
    part: Part,
    label: str,
    budget: ContainerBudget,
    level: int,
    check: Callable[[], None],
    out: Opened,
) -> None:
    directory = _central_directory_size(part.payload)
    if directory is not None and directory > MAX_CENTRAL_DIRECTORY_BYTES:
        out.limit(f"{label}: {directory} bytes of member list")
        return
    if budget.archives >= MAX_ARCHIVES_OPENED:
        out.limit(f"{label}: over {MAX_ARCHIVES_OPENED} archives")
        return
    budget.archives += 1
    try:
        with zipfile.ZipFile(io.BytesIO(part.payload)) as archive:
            names = archive.namelist()
            if ooxml.is_ooxml(names):
                _office(archive, names, label, budget, check, out)
            elif level >= MAX_NESTING:
                out.limit(f"{label}: archive nested {level} deep")
            else:
                _members(archive, part, label, budget, check, out)
    except _ZIP_ERRORS:
        return  # an archive no unzip tool opens either; its name was judged already


def _central_directory_size(data: bytes) -> int | None:
    """The member list's size as the zip's end record gives it (None: no end record)."""
    at = data.rfind(_EOCD, max(0, len(data) - 0xFFFF - _EOCD_SIZE))
    if at < 0 or len(data) - at < _EOCD_SIZE:
        return None
    return int.from_bytes(data[at + 12 : at + 16], "little")


def _office(
    archive: zipfile.ZipFile,
    names: list[str],
    label: str,
    budget: ContainerBudget,
    check: Callable[[], None],
    out: Opened,
) -> None:
    targets = ooxml.external_targets(archive, names, check, MAX_CONTAINER_BYTES - budget.bytes)
    budget.bytes += targets.bytes_read
    out.links.extend(targets.links)
    if targets.remote_loads:
        out.signals.append(_sig("attach-office-remote-load", label))
    if targets.limited:
        out.limit(f"{label}: relationships read in part")


def _members(
    archive: zipfile.ZipFile,
    part: Part,
    label: str,
    budget: ContainerBudget,
    check: Callable[[], None],
    out: Opened,
) -> None:
    for info in archive.infolist():
        check()
        if info.is_dir() or info.flag_bits & 0x1:
            continue  # encrypted members are reported by the attachment rules
        name = info.filename.rsplit("/", 1)[-1]
        kind = _MEMBER_TYPES.get(extension(name))
        if kind is None:
            continue
        if budget.members >= MAX_MEMBERS_READ:
            out.limit(f"{label}: over {MAX_MEMBERS_READ} members")
            return
        room = min(MAX_MEMBER_BYTES, MAX_CONTAINER_BYTES - budget.bytes)
        if room <= 0:
            out.limit(f"{label}: over {MAX_CONTAINER_BYTES} bytes decompressed")
            return
        budget.members += 1
        data = _read_member(archive, info, room + 1, check)
        if len(data) > room:
            out.limit(f"{label}: {name} over {room} bytes")
            data = data[:room]
        budget.bytes += len(data)
        _judge_member(part, name, kind, data, label, budget, out)


def _judge_member(
    parent: Part, name: str, kind: str, data: bytes, label: str, budget: ContainerBudget,
    out: Opened,
) -> None:
    """Hand a member on to be judged like an attachment, or, past the per-kind budget, have its
    source searched for URLs only (linear) and report the limit."""
    group = _KIND_GROUPS.get(kind)
    if group is not None:
        used = budget.by_group.get(group, 0) + len(data)
        if used > _GROUP_BUDGETS[group]:
            out.limit(f"{label}: {name} past {_GROUP_BUDGETS[group]} bytes of {group}")
            out.texts.append(as_text(data, None))
            return
        budget.by_group[group] = used
    out.parts.append(_member(parent, name, kind, data))


def _read_member(
    archive: zipfile.ZipFile, info: zipfile.ZipInfo, limit: int, check: Callable[[], None]
) -> bytes:
    """At most ``limit`` decompressed bytes of a member, whatever its header claims."""
    chunks: list[bytes] = []
    got = 0
    try:
        with archive.open(info) as member:
            while got < limit:
                chunk = member.read(min(_READ_CHUNK, limit - got))
                if not chunk:
                    break
                chunks.append(chunk)
                got += len(chunk)
                check()
    except _ZIP_ERRORS:
        pass  # a damaged member: what was read before the damage is still judged
    return b"".join(chunks)
