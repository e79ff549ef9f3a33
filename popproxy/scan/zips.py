"""Zip archives inside attachments: members read within hard limits, Office documents in them.

:func:`open_zip` reads an archive for :func:`popproxy.scan.containers.open_container`: the
members of the kinds that carry links are handed back as parts to be judged like attachments of
their own (images too, for their QR codes), an Office Open XML document has its relationships
read (:mod:`.ooxml`), an OpenDocument file its content and styles (:mod:`.odf`).  Archives are
read with hard limits (each a constant below): members read per message, bytes decompressed per
member and per message, nesting of containers; a zip bomb costs at most MAX_MEMBER_BYTES of
memory.  A limit reached is reported as ``limit-container`` (weighted to tag, as every
``limit-*`` signal): padding an archive past a limit must not make it cleaner.
"""

from __future__ import annotations

import io
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field

from popproxy.scan import odf, ooxml
from popproxy.scan.extract import Link
from popproxy.scan.mime import Part
from popproxy.scan.qr import MAX_QR_IMAGE_BYTES, MAX_QR_IMAGES
from popproxy.scan.sniff import as_text, extension
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

# Image members (PNG, JPEG, GIF, WebP by extension) read per message, for their QR codes: as
# many as the QR decoder takes per message (qr.MAX_QR_IMAGES), since more would be counted as
# skipped there anyway.  They have budgets of their own, not MAX_MEMBERS_READ and
# MAX_CONTAINER_BYTES: a zip of holiday photos is honest mail and must not reach a limit that
# tags, nor use up the budget of the members that carry links.  Images past these are counted
# in qr-skipped, as attached images past the QR decoder's limits are.
MAX_IMAGE_MEMBERS = MAX_QR_IMAGES

# Bytes of image members decompressed per message, all together: two images of the QR
# decoder's largest size (qr.MAX_QR_IMAGE_BYTES), or dozens of the small pictures a QR code is.
# Members are held in memory until judged, so this bounds what a zip of images costs.
MAX_IMAGE_MEMBER_BYTES = 2 * MAX_QR_IMAGE_BYTES

# Image members read, by extension, and the type they are judged as (the QR decoder goes by
# the magic bytes, so a lying extension only decides whether the member is read).
_IMAGE_TYPES = {
    "png": "image/png", "gif": "image/gif", "webp": "image/webp",
    "jpg": "image/jpeg", "jpeg": "image/jpeg", "jpe": "image/jpeg", "jfif": "image/jpeg",
}

# Bytes read at once from a member, between two checks of the scan's time budget.
_READ_CHUNK = 1024 * 1024

# Extensions of text files searched for URLs (as attachments and as members).
TEXT_EXTENSIONS = frozenset({"txt", "text", "csv", "tsv", "log", "md", "json", "xml", "rtf",
                             "url", "webloc", "website", "ini", "vcf"})
# Zip members read, by extension, and the type they are judged as.  Executables are judged
# by name already (attach-archive-executable); these are the kinds that carry links.
_MEMBER_TYPES = {
    "eml": "message/rfc822",
    "msg": "application/vnd.ms-outlook",
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
    **{ext: "application/octet-stream" for ext in odf.EXTENSIONS},
    **{ext: "text/plain" for ext in TEXT_EXTENSIONS},
}
_EOCD = b"PK\x05\x06"
_EOCD_SIZE = 22


@dataclass(slots=True)
class ContainerBudget:
    """What the containers of one message have used of the limits above."""

    members: int = 0
    bytes: int = 0
    archives: int = 0
    calendar_bytes: int = 0
    images: int = 0  # image members read (MAX_IMAGE_MEMBERS)
    image_bytes: int = 0  # their bytes (MAX_IMAGE_MEMBER_BYTES)
    by_group: dict[str, int] = field(default_factory=dict)  # member bytes per _GROUP_BUDGETS


@dataclass(slots=True)
class Opened:
    """What one attachment holds (see :mod:`.containers`)."""

    signals: list[Signal] = field(default_factory=list)
    links: list[Link] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)
    parts: list[Part] = field(default_factory=list)
    message: bytes | None = None
    images_skipped: int = 0  # image members not read (a limit): the scan counts them skipped

    def limit(self, detail: str) -> None:
        self.signals.append(sig("limit-container", detail))


def sig(name: str, detail: str) -> Signal:
    return Signal(name=name, weight=weight(name), detail=clean_detail(detail))


def member_part(parent: Part, name: str, content_type: str, data: bytes) -> Part:
    return Part(content_type=content_type, filename=name, attachment=True, payload=data,
                charset=None, depth=parent.depth)


_ZIP_ERRORS = (zipfile.BadZipFile, zipfile.LargeZipFile, RuntimeError, NotImplementedError,
               OSError, EOFError, ValueError, zlib.error, LookupError)


def open_zip(
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
                _document("office", archive, names, label, budget, check, out)
            elif odf.is_odf(archive, names):
                _document("opendocument", archive, names, label, budget, check, out)
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


# How each kind of document names what it points to outside itself.
_DOCUMENT_READERS = {"office": (ooxml.external_targets, "relationships"),
                     "opendocument": (odf.external_targets, "document")}


def _document(
    kind: str,
    archive: zipfile.ZipFile,
    names: list[str],
    label: str,
    budget: ContainerBudget,
    check: Callable[[], None],
    out: Opened,
) -> None:
    read, what = _DOCUMENT_READERS[kind]
    targets = read(archive, names, check, MAX_CONTAINER_BYTES - budget.bytes)
    budget.bytes += targets.bytes_read
    out.links.extend(targets.links)
    if targets.remote_loads:
        out.signals.append(sig("attach-office-remote-load", label))
    if targets.limited:
        out.limit(f"{label}: {what} read in part")


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
        if extension(name) in _IMAGE_TYPES:
            _image_member(archive, info, part, budget, check, out)
            continue
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
        judge_member(part, name, kind, data, label, budget, out)


def _image_member(
    archive: zipfile.ZipFile,
    info: zipfile.ZipInfo,
    parent: Part,
    budget: ContainerBudget,
    check: Callable[[], None],
    out: Opened,
) -> None:
    """An image member handed on to be judged (its QR codes decoded), within the image budgets.

    zipfile stops a member at its declared size, so the header's size bounds the read.
    """
    size = info.file_size
    if (
        budget.images >= MAX_IMAGE_MEMBERS
        or size > MAX_QR_IMAGE_BYTES
        or budget.image_bytes + size > MAX_IMAGE_MEMBER_BYTES
    ):
        out.images_skipped += 1
        return
    budget.images += 1
    data = _read_member(archive, info, size, check)
    budget.image_bytes += len(data)
    name = info.filename.rsplit("/", 1)[-1]
    out.parts.append(member_part(parent, name, _IMAGE_TYPES[extension(name)], data))


def judge_member(
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
    out.parts.append(member_part(parent, name, kind, data))


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
