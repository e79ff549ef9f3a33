"""The defang action when the client was already told the message's size: same length.

The normal defang (:mod:`popproxy.scan.defang`) re-serialises the message, so its size
changes.  A message listed at the upstream's size before it was judged (the listing budget,
docs/scanning.md) must be delivered at exactly that size (RFC 1939 section 5), so this form
edits the original in place with equal-length substitutions (:mod:`sized_links`) in every text
part, in the part's own transfer encoding.  The MIME structure is read from the raw bytes
(never re-serialised): boundaries, headers and other parts keep every byte.

It gives up (None) whenever it cannot be sure the result is inert at the same length: a
multipart without a boundary, a transfer encoding it cannot edit in place, base64 that is not
canonical, a charset that is not ASCII-compatible, an attachment a client could open as a page
or a link, too many parts or levels.  The caller then delivers the padded quarantine notice,
never the original (house rule 10: a limit never makes a message look cleaner).
"""

from __future__ import annotations

import base64
import binascii
import re

from popproxy.scan import sniff
from popproxy.scan.limits import MAX_MIME_DEPTH, MAX_MIME_PARTS
from popproxy.scan.sized_links import defang_base64, defang_qp, defang_text

# Charsets whose text is not ASCII bytes: a link in them would not be found, so no promise.
_NOT_ASCII_COMPATIBLE = ("utf-16", "utf-32", "ucs-2", "ucs-4", "utf-7", "cp037", "cp500",
                         "cp1026", "ibm", "ebcdic")
_PARAM = re.compile(rb'(?i);\s*([a-z0-9*-]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s;]*))')
_HEADER_END = re.compile(rb"\r?\n\r?\n")


class _Refused(Exception):
    """This part cannot be defanged in place at the same length."""


def sized_defang(message: bytes) -> bytes | None:
    """``message`` with every link in its text parts inert and exactly its length; None when
    that cannot be done safely (the caller quarantines instead)."""
    out = bytearray(message)
    todo = [(0, len(message), 0)]  # (start, end, depth) of each entity still to look at
    parts = 0
    try:
        while todo:
            start, end, depth = todo.pop()
            parts += 1
            if parts > MAX_MIME_PARTS or depth > MAX_MIME_DEPTH:
                raise _Refused
            todo.extend(_entity(message, out, start, end, depth))
    except _Refused:
        return None
    return bytes(out)


def _entity(message: bytes, out: bytearray, start: int, end: int,
            depth: int) -> list[tuple[int, int, int]]:
    """Edit one MIME entity's body in ``out``; the child entities still to visit."""
    found = _HEADER_END.search(message, start, end)
    head = message[start : found.start() if found else end]
    body_start = found.end() if found else end
    fields = _fields(head)
    ctype, params = _content_type(fields.get(b"content-type", b""))
    encoding = fields.get(b"content-transfer-encoding", b"7bit").strip().lower()
    if ctype.startswith(b"multipart/"):
        boundary = params.get(b"boundary")
        if not boundary or encoding not in (b"7bit", b"8bit", b"binary"):
            raise _Refused
        return [(s, e, depth + 1) for s, e in _children(message, body_start, end, boundary)]
    if ctype == b"message/rfc822":
        if encoding not in (b"7bit", b"8bit", b"binary"):
            raise _Refused
        return [(body_start, end, depth + 1)]
    charset = params.get(b"charset", b"").decode("ascii", "replace").lower()
    if charset.startswith(_NOT_ASCII_COMPATIBLE):
        raise _Refused
    raw = message[body_start:end]
    if not ctype.startswith(b"text/"):
        _check_attachment(raw, encoding, ctype, fields, params)
        return []
    new = _encoded_defang(raw, encoding, html=b"html" in ctype or b"xml" in ctype)
    out[body_start:end] = new
    return []


def _encoded_defang(raw: bytes, encoding: bytes, html: bool) -> bytes:
    if encoding in (b"7bit", b"8bit", b"binary"):
        return defang_text(raw, html)
    if encoding == b"quoted-printable":
        return defang_qp(raw, html)
    if encoding == b"base64":
        new = defang_base64(raw, html)
        if new is None:
            raise _Refused
        return new
    raise _Refused  # x-uuencode and the like: no in-place edit


def _check_attachment(raw: bytes, encoding: bytes, ctype: bytes, fields: dict[bytes, bytes],
                      params: dict[bytes, bytes]) -> None:
    """A part that is not text keeps its bytes, unless a client could open it as a page or a
    link (the normal defang turns those into text, which changes the size)."""
    names = [params.get(b"name", b"").decode("latin-1")]
    _, disposition = _content_type(fields.get(b"content-disposition", b""))
    names.append(disposition.get(b"filename", b"").decode("latin-1"))
    names = [n for n in names if n]
    if sniff.is_link_file(names) or sniff.risky_name(names) is not None:
        raise _Refused
    data = raw
    if encoding == b"base64":
        try:
            data = base64.b64decode(b"".join(raw.split()))
        except (binascii.Error, ValueError):
            raise _Refused from None
    if sniff.active_markup(data, ctype.decode("latin-1"), names) is not None:
        raise _Refused


def _fields(head: bytes) -> dict[bytes, bytes]:
    """Header fields by lower-case name (unfolded; the first of each name)."""
    fields: dict[bytes, bytes] = {}
    unfolded = re.sub(rb"\r?\n[ \t]", b" ", head)
    for line in unfolded.splitlines():
        name, colon, value = line.partition(b":")
        if colon:
            fields.setdefault(name.strip().lower(), value.strip())
    return fields


def _content_type(value: bytes) -> tuple[bytes, dict[bytes, bytes]]:
    """(lower-case type, parameters); a missing type is text/plain (RFC 2045 section 5.2)."""
    main = value.split(b";", 1)[0].strip().lower() or b"text/plain"
    params: dict[bytes, bytes] = {}
    for m in _PARAM.finditer(value):
        params.setdefault(m.group(1).lower(), m.group(2) if m.group(2) is not None
                          else m.group(3))
    return main, params


def _children(message: bytes, start: int, end: int, boundary: bytes) -> list[tuple[int, int]]:
    """(start, end) of each body part between delimiter lines (RFC 2046 section 5.1.1: the
    line break before a delimiter belongs to it)."""
    delimiter = re.compile(rb"(?m)^--" + re.escape(boundary) + rb"(--)?[ \t]*(?:\r?\n|\Z)")
    spans: list[tuple[int, int]] = []
    open_at: int | None = None
    for m in delimiter.finditer(message, start, end):
        if open_at is not None:
            spans.append((open_at, m.start()))
        if m.group(1):
            return spans
        open_at = m.end()
    if open_at is None:
        raise _Refused  # no delimiter at all: the parts cannot be told apart
    spans.append((open_at, end))
    return spans
