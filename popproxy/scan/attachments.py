"""Signals from attachments: executables, file-name tricks, macros, archives, HTML files."""

from __future__ import annotations

import io
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field

from popproxy.scan import odf
from popproxy.scan.extract import Link, html_extract
from popproxy.scan.limits import MAX_ARCHIVE_MEMBERS
from popproxy.scan.lists import DECOY_EXTENSIONS, RISKY_EXTENSIONS
from popproxy.scan.macros import has_vba_macros
from popproxy.scan.media import drawn_codes, scan_media
from popproxy.scan.mime import Part
from popproxy.scan.qr import MediaBudget
from popproxy.scan.textdecode import decode_bytes
from popproxy.scan.verdict import Signal, clean_detail
from popproxy.scan.weights import weight

# Magic numbers of programs an OS will run (file(1)'s magic database has the same entries).
_EXEC_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"MZ", "windows-pe"),
    (b"\x7fELF", "elf"),
    (b"\xfe\xed\xfa\xce", "mach-o"),
    (b"\xfe\xed\xfa\xcf", "mach-o"),
    (b"\xce\xfa\xed\xfe", "mach-o"),
    (b"\xcf\xfa\xed\xfe", "mach-o"),
    (b"\xca\xfe\xba\xbe", "mach-o-fat"),
    (b"L\x00\x00\x00\x01\x14\x02\x00", "windows-lnk"),
)
# "MZ" is two common letters; a real DOS/PE header is at least 64 bytes (e_lfanew at 0x3c).
_MIN_PE_BYTES = 64
_ISO9660 = (0x8001, b"CD001")
_OLE_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
_ZIP_MAGIC = b"PK\x03\x04"
_OPAQUE_ARCHIVES = ((b"7z\xbc\xaf\x27\x1c", "7z"), (b"Rar!\x1a\x07", "rar"))
# Bidirectional controls reorder what a file name shows: "invoice\u202efdp.exe" reads as
# "invoiceexe.pdf" (Unicode TR 9; CVE-2021-42574 "Trojan Source" is the same trick in code).
_BIDI_CONTROLS = frozenset("\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
_HTML_EXTENSIONS = frozenset({"htm", "html", "shtml", "xhtml", "mht", "mhtml", "svg", "hta"})
_OFFICE_ZIP_DIRS = ("word/", "xl/", "ppt/")


@dataclass(slots=True)
class AttachmentFindings:
    """Signals raised by attachments, links found inside them, and their visible text (PDF)."""

    signals: list[Signal] = field(default_factory=list)
    links: list[Link] = field(default_factory=list)
    text: list[str] = field(default_factory=list)


def _sig(name: str, detail: str) -> Signal:
    return Signal(name=name, weight=weight(name), detail=clean_detail(detail))


def extensions(filename: str) -> list[str]:
    """Lower-case extensions, last one last; padding spaces ignored ("a.pdf   .exe")."""
    parts = [p.strip().lower() for p in filename.split(".")]
    return [p for p in parts[1:] if p]


def name_signals(filename: str) -> list[Signal]:
    """Signals from an attachment's file name alone."""
    out: list[Signal] = []
    if any(ch in _BIDI_CONTROLS for ch in filename):
        out.append(_sig("attach-bidi-name", filename))
    exts = extensions(filename)
    if exts and exts[-1] in RISKY_EXTENSIONS:
        double = len(exts) >= 2 and exts[-2] in DECOY_EXTENSIONS
        out.append(_sig("attach-double-ext" if double else "attach-risky-ext", filename))
    return out


def executable_kind(data: bytes) -> str | None:
    """The executable format named by the magic bytes, or None."""
    for magic, kind in _EXEC_MAGIC:
        if data.startswith(magic):
            if kind == "windows-pe" and len(data) < _MIN_PE_BYTES:
                continue
            return kind
    offset, magic = _ISO9660
    if data[offset : offset + len(magic)] == magic:
        return "iso9660"
    return None


def _no_check() -> None:
    pass


def scan_attachment(
    part: Part,
    *,
    check_macros: bool,
    max_members: int,
    media: MediaBudget | None = None,
    check: Callable[[], None] = _no_check,
) -> AttachmentFindings:
    """All signals and links of one attachment (or inline non-text part).

    ``media`` is the message's budget for image (QR code) and PDF decoding; ``check`` the
    scanner's time-budget checkpoint.
    """
    found = AttachmentFindings()
    media = media if media is not None else MediaBudget()
    label = part.filename or part.content_type
    found.signals.extend(name_signals(part.filename))
    data = part.payload
    kind = executable_kind(data)
    if kind is not None:
        found.signals.append(_sig("attach-executable", f"{label}: {kind}"))
    elif data.startswith(_ZIP_MAGIC):
        found.signals.extend(_zip_signals(data, label, check_macros, max_members))
    elif data.startswith(_OLE_MAGIC):
        if check_macros and has_vba_macros(part.filename or "attachment", data):
            found.signals.append(_sig("attach-macro", label))
    elif any(data.startswith(m) for m, _ in _OPAQUE_ARCHIVES):
        found.signals.append(_sig("attach-opaque-archive", label))
    else:
        _media(part, label, media, check, found)
    if _is_html(part):
        _html_attachment(part, label, media, check, found)
    return found


def _media(
    part: Part, label: str, media: MediaBudget, check: Callable[[], None], found: AttachmentFindings
) -> None:
    """QR codes in images, links and text of PDFs (popproxy.scan.media)."""
    seen = scan_media(part.payload, label, inline=not part.attachment, budget=media, check=check)
    if seen is not None:
        found.signals.extend(seen.signals)
        found.links.extend(seen.links)
        found.text.extend(seen.text)


def _is_html(part: Part) -> bool:
    exts = extensions(part.filename)
    return part.content_type in ("text/html", "image/svg+xml") or (
        bool(exts) and exts[-1] in _HTML_EXTENSIONS
    )


def _html_attachment(
    part: Part, label: str, media: MediaBudget, check: Callable[[], None],
    found: AttachmentFindings,
) -> None:
    page = html_extract(decode_bytes(part.payload, part.charset), attachment=True, media=media)
    found.links.extend(page.links)
    if page.drawn_codes:
        drawn = drawn_codes(page.drawn_codes, label, media, check, inline=False)
        found.signals.extend(drawn.signals)
        found.links.extend(drawn.links)
    found.signals.append(_sig("attach-html", label))
    if page.unparsed:
        found.signals.append(_sig("limit-html", label))
    if page.forms or page.password_inputs:
        found.signals.append(_sig("attach-html-form", label))
    if page.scripts:
        found.signals.append(_sig("attach-html-script", label))


def zip_findings(data: bytes, label: str) -> list[Signal]:
    """A zip attachment's own signals (macros, programs inside, encryption), as the scanner
    finds them (for popproxy.scan.risky)."""
    return _zip_signals(data, label, True, MAX_ARCHIVE_MEMBERS)


def _zip_signals(data: bytes, label: str, check_macros: bool, max_members: int) -> list[Signal]:
    out: list[Signal] = []
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            members = archive.infolist()[:max_members]
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, NotImplementedError):
        return out
    if any(m.flag_bits & 0x1 for m in members):
        out.append(_sig("attach-encrypted-archive", label))
    names = [m.filename for m in members]
    inner = next((n for n in names if name_signals(n.rsplit("/", 1)[-1])), None)
    if inner is not None:
        out.append(_sig("attach-archive-executable", f"{label}: {inner}"))
    office = any(n.startswith(_OFFICE_ZIP_DIRS) for n in names)
    vba = any(n.lower().endswith("vbaproject.bin") for n in names)
    if office and vba and check_macros and has_vba_macros(label, data):
        out.append(_sig("attach-macro", label))
    elif check_macros and odf.has_macros(names):
        # OpenDocument macros are StarBasic or script files, not VBA: olevba does not read
        # them, and their presence is the evidence (LibreOffice asks before running them).
        out.append(_sig("attach-macro", label))
    return out
