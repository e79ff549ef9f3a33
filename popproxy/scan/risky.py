"""Which attachments ``scan.risky_attachments: strip | replace`` removes when defanging.

Programs (by their magic bytes: PE, ELF, Mach-O, Windows shortcuts) and disk images (ISO 9660),
files a system runs or mounts by their name (``.js``, ``.vbs``, ``.bat``, ``.iso``...: the
scanner's RISKY_EXTENSIONS), Office documents with VBA macros (and OpenDocument ones with
macros), and archives holding any of those by name.  The facts are the scanner's own
(:mod:`popproxy.scan.attachments`), so what is removed is what was scored.  An opaque ``.bin``
or ``application/octet-stream`` is not risky by itself: only its content can make it so.
"""

from __future__ import annotations

from dataclasses import dataclass
from email.message import Message
from typing import Literal

from popproxy.scan.attachments import executable_kind, extensions, zip_findings
from popproxy.scan.inert_text import defang_text
from popproxy.scan.lists import RISKY_EXTENSIONS
from popproxy.scan.macros import has_vba_macros
from popproxy.scan.mime_parse import parse_message
from popproxy.scan.part_names import name_param, shown_name, text_name

# keep: attachments keep their bytes; strip: each risky one becomes an inline note; replace:
# each becomes a text attachment "<name>.removed.txt" holding the note.
RiskyMode = Literal["keep", "strip", "replace"]

OLE_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"  # Office 97-2003 compound file
ZIP_MAGIC = b"PK\x03\x04"
# Signals of zip content that make the attachment risky (OOXML/ODF macros, a program inside).
RISKY_ZIP_SIGNALS = {"attach-macro": "document with macros",
                     "attach-archive-executable": "archive holding a program"}


def risky_attachment(names: list[str], data: bytes) -> str | None:
    """Why this attachment (``data``: transfer encoding removed) is risky, or None."""
    kind = executable_kind(data)
    if kind is not None:
        return "disk image (ISO 9660)" if kind == "iso9660" else f"program ({kind})"
    for name in names:
        exts = extensions(name)
        if exts and exts[-1] in RISKY_EXTENSIONS:
            return f"file type .{exts[-1]}"
    label = names[0] if names else "attachment"
    if data.startswith(OLE_MAGIC) and has_vba_macros(label, data):
        return "document with macros"
    if data.startswith(ZIP_MAGIC):
        for signal in zip_findings(data, label):
            if signal.name in RISKY_ZIP_SIGNALS:
                return RISKY_ZIP_SIGNALS[signal.name]
    return None


@dataclass(frozen=True, slots=True)
class RemovalNote:
    """What a removed attachment's part becomes: its header fields and its text."""

    content_type: str
    disposition: str
    text: bytes


def removal_note(names: list[str], data: bytes, mode: RiskyMode) -> RemovalNote | None:
    """The note replacing a risky attachment under ``mode`` (None: keep it as it is)."""
    why = risky_attachment(names, data) if mode != "keep" else None
    if why is None:
        return None
    shown = shown_name(names[0]) if names else ""
    # Defanged: a name like "paypal.com.exe" must not become a link in the note.
    text = defang_text(f"popproxy removed the attachment {shown or '(without a name)'} "
                       f"({len(data)} bytes): {why}.\n"
                       "Ask your mail administrator if you need it.\n").encode("utf-8")
    if mode == "strip":
        return RemovalNote('text/plain; charset="utf-8"', "inline", text)
    name = text_name(f"{shown or 'attachment'}.removed")
    return RemovalNote(f'text/plain; charset="utf-8"; {name_param("name", name)}',
                       f"attachment; {name_param('filename', name)}", text)


def has_risky_attachment(message: bytes) -> bool:
    """Whether a message has an attachment ``risky_attachment`` finds (as defang walks it)."""
    for part in parse_message(message).walk():
        if part.is_multipart() or not _is_attachment(part):
            continue
        payload = part.get_payload(decode=True)
        names = [n for n in (part.get_filename() or "",) if n]
        if isinstance(payload, bytes) and risky_attachment(names, payload) is not None:
            return True
    return False


def _is_attachment(part: Message) -> bool:
    body = part.get_content_type() in ("text/plain", "text/html")
    return not body or part.get_content_disposition() == "attachment"
