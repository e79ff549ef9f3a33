"""Outlook ``.msg`` attachments: a forwarded mail as Outlook saves it, turned into a MIME message.

A ``.msg`` file is an OLE compound file ([MS-CFB]) holding the message's MAPI properties as
streams named ``__substg1.0_<tag><type>`` ([MS-OXMSG] 2.1): the subject (PR_SUBJECT, 0x0037),
the plain body (PR_BODY, 0x1000) and the HTML body (PR_HTML, 0x1013), each as a Unicode string
(type 001F, UTF-16LE), an 8-bit string (001E) or binary (0102); each attachment is a storage
``__attach_version1.0_#<n>`` with its long (0x3707) and short (0x3704) file names and its bytes
(PR_ATTACH_DATA_BIN, 0x3701 0102).  Phishing forwards a lure as a ``.msg`` so that its links and
attachments sit one container deeper than a filter looks.

:func:`read_msg` reads those streams with ``olefile`` within the limits below, and
:func:`as_message` writes them out as an RFC 5322 message, which the scanner walks like any
attached message: the body's links go through the link rules, the attachments' names through
the attachment rules (risky extensions, bidi tricks) and their content through the container
and QR/PDF scans.

Not read: the RTF body (PR_RTF_COMPRESSED, 0x1009).  It is compressed RTF ([MS-OXRTFCP]) and
usually repeats the plain or HTML body; decompressing and parsing RTF is a parser of its own
with its own limits, so a message whose only body is RTF goes without its body links here.
Attached messages (an attachment stored as an object, type 000D) keep their names only.
"""

from __future__ import annotations

import email.errors
import email.policy
import io
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from email.message import EmailMessage

import olefile  # type: ignore[import-untyped]

from popproxy.scan.textdecode import decode_bytes

# Bytes of a .msg file opened.  olefile reads the whole sector table and directory on opening,
# so its cost grows with the file; the same bound as oletools gets (limits.MAX_OFFICE_BYTES).
MAX_MSG_BYTES = 16 * 1024 * 1024

# Bytes of one property stream read (a body, or an attachment's content): as for a zip member
# (zips.MAX_MEMBER_BYTES).  A bigger attachment keeps its name; its content is left unread.
MAX_MSG_STREAM_BYTES = 4 * 1024 * 1024

# Attachments read per .msg file.  A forwarded mail has a few; past this, names and content of
# the rest go unread.
MAX_MSG_ATTACHMENTS = 50

# Characters of a subject or file name kept: RFC 5322 section 2.1.1 (998 per header line).
_MAX_NAME_CHARS = 998

_OLE_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
# A property stream's name as it is stored in the compound file's directory (UTF-16LE).
_PROPERTY_MARK = "__substg1.0_".encode("utf-16-le")
_MSG_TYPES = frozenset({"application/vnd.ms-outlook", "application/x-msg"})
_ATTACH_PREFIX = "__attach_version1.0_#"
_SUBJECT, _BODY, _HTML = "0037", "1000", "1013"
_LONG_NAME, _SHORT_NAME, _DATA = "3707", "3704", "3701"
_UNICODE, _STRING8, _BINARY = "001F", "001E", "0102"
# Characters that cannot stand in a header: the line breaks and other C0 controls.
_CONTROLS = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]+")


@dataclass(slots=True)
class MsgContent:
    """What :func:`read_msg` found in one .msg file."""

    subject: str = ""
    body: str = ""
    html: str = ""
    attachments: list[tuple[str, bytes]] = field(default_factory=list)  # (file name, content)
    limited: bool = False  # a limit was reached: some of the file went unread
    bytes_read: int = 0  # stream bytes read


def is_msg(data: bytes, content_type: str, extension: str) -> bool:
    """An OLE compound file declared as an Outlook message, or holding MAPI property streams."""
    if not data.startswith(_OLE_MAGIC):
        return False
    if content_type in _MSG_TYPES or extension == "msg":
        return True
    return data.find(_PROPERTY_MARK, 0, MAX_MSG_BYTES) >= 0


def read_msg(data: bytes, max_bytes: int, check: Callable[[], None]) -> MsgContent | None:
    """The subject, bodies and attachments of a .msg file, reading at most ``max_bytes`` of
    streams (what is left of the message's container budget); None when it cannot be opened."""
    if len(data) > MAX_MSG_BYTES:
        return MsgContent(limited=True)
    try:
        ole = olefile.OleFileIO(io.BytesIO(data))
    except Exception:
        # olefile raises many kinds on hostile files (OSError, IndexError, struct.error...):
        # a file Outlook cannot open either.
        return None
    try:
        return _read(_Reader(ole, max_bytes), check)
    finally:
        ole.close()


def _read(reader: _Reader, check: Callable[[], None]) -> MsgContent:
    out = MsgContent()
    out.subject = _clean(reader.text("", _SUBJECT))
    out.body = reader.text("", _BODY)
    check()
    out.html = reader.text("", _HTML)
    check()
    storages = reader.attachment_storages()
    if len(storages) > MAX_MSG_ATTACHMENTS:
        reader.limited = True
        storages = storages[:MAX_MSG_ATTACHMENTS]
    for storage in storages:
        name = reader.text(storage, _LONG_NAME) or reader.text(storage, _SHORT_NAME)
        content = reader.stream(f"{storage}/__substg1.0_{_DATA}{_BINARY}") or b""
        out.attachments.append((_clean(name) or "attachment", content))
        check()
    out.limited, out.bytes_read = reader.limited, reader.bytes_read
    return out


class _Reader:
    """Streams of one open compound file, within the byte limits."""

    def __init__(self, ole: olefile.OleFileIO, max_bytes: int) -> None:
        self._ole = ole
        self._room = max_bytes
        self.limited = False
        self.bytes_read = 0

    def attachment_storages(self) -> list[str]:
        try:
            entries = self._ole.listdir(streams=False, storages=True)
        except Exception:
            return []
        found = {e[0] for e in entries if len(e) == 1 and e[0].startswith(_ATTACH_PREFIX)}
        return sorted(found)

    def text(self, storage: str, tag: str) -> str:
        """A string property, from whichever of its three types the file stores."""
        prefix = f"{storage}/__substg1.0_{tag}" if storage else f"__substg1.0_{tag}"
        raw = self.stream(prefix + _UNICODE)
        if raw is not None:
            return raw.decode("utf-16-le", errors="replace").rstrip("\x00")
        raw = self.stream(prefix + _STRING8)
        if raw is None:
            raw = self.stream(prefix + _BINARY)  # PR_HTML is stored as binary
        return "" if raw is None else decode_bytes(raw, None).rstrip("\x00")

    def stream(self, path: str) -> bytes | None:
        """A stream's bytes; None when absent, damaged or past a limit (then ``limited``)."""
        try:
            if not self._ole.exists(path):
                return None
            size = self._ole.get_size(path)
            if size > min(MAX_MSG_STREAM_BYTES, self._room - self.bytes_read):
                self.limited = True
                return None
            data: bytes = self._ole.openstream(path).read(size)
        except Exception:
            return None  # a damaged stream (olefile raises many kinds): unreadable to Outlook
        self.bytes_read += len(data)
        return data


def _clean(text: str) -> str:
    """A subject or file name that can stand in a header (bidi controls are kept: evidence)."""
    return _CONTROLS.sub(" ", text).strip()[:_MAX_NAME_CHARS]


def as_message(content: MsgContent) -> bytes:
    """The .msg file's content as an RFC 5322 message, for the scanner's message walk."""
    try:
        return _mime(content)
    except (ValueError, TypeError, LookupError, email.errors.MessageError):
        # A name the email package refuses to write: the bodies and contents still count.
        for i, (_, data) in enumerate(content.attachments):
            content.attachments[i] = (f"attachment{i}", data)
        content.subject = ""
        return _mime(content)


def _mime(content: MsgContent) -> bytes:
    out = EmailMessage(policy=email.policy.SMTP)
    out["Subject"] = content.subject
    if content.body:
        out.set_content(content.body)
    if content.html:
        if content.body:
            out.add_alternative(content.html, subtype="html")
        else:
            out.set_content(content.html, subtype="html")
    for name, data in content.attachments:
        out.add_attachment(data, maintype="application", subtype="octet-stream", filename=name)
    return out.as_bytes()
