"""Attachments a client or browser could render as a page, found by content, name and type.

An attachment's declared Content-Type is the sender's word.  What opens it is the file name
(the reader's OS picks the program by extension), the type (a webmail serving it) or the
content (browsers sniff a download served as unknown or octet-stream; XML with an XHTML or
SVG namespace runs scripts).  :func:`active_markup` looks at all three, so the defang can turn
such an attachment into inert text whatever it claims to be.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from popproxy.scan.textdecode import decode_bytes

# Extensions a browser or the OS opens as a page, a page-like application (.hta runs with the
# user's rights) or a web archive, and link files that navigate when opened.
MARKUP_EXTENSIONS = frozenset({
    "htm", "html", "shtml", "shtm", "xht", "xhtml", "svg", "svgz", "mht", "mhtml", "hta",
    "xsl", "xslt",
})
LINK_EXTENSIONS = frozenset({"url", "webloc", "website"})
# Types every client renders as a page, whatever the content.
MARKUP_TYPES = frozenset({"text/html", "application/xhtml+xml", "image/svg+xml",
                          "application/hta", "text/x-html", "application/x-mimearchive"})
# Bytes looked at for a binary signature, a NUL (binary data) or UTF-16 markup.
_HEAD = 1024
# Formats with a signature of their own: their content is not sniffed for markup (a PDF or a
# zip can hold "<html" by chance or by design; archives are judged by the scanner).
_BINARY_MAGIC = (b"%PDF", b"PK\x03\x04", b"\x89PNG", b"GIF8", b"\xff\xd8\xff",
                 b"\xd0\xcf\x11\xe0", b"MZ", b"\x1f\x8b", b"Rar!", b"7z\xbc\xaf", b"RIFF",
                 b"OggS", b"ID3", b"\x00\x00\x01\x00")
# How a page starts (the HTML standard's MIME sniffing patterns, plus SVG), after blanks.
_PAGE_START = re.compile(
    rb"(?i)(?:\xef\xbb\xbf)?+[\t\n\f\r ]*+<(?:!doctype[\t\n\f\r ]+html|html|head|script"
    rb"|iframe|h1|div|font|table|a|style|title|b|body|br|p|!--|svg)(?=[\t\n\f\r />])")
# Markup that runs code, submits or navigates, anywhere in a text attachment; XML turns into
# a page with an XHTML or SVG namespace or an XSLT stylesheet.
_ACTIVE = re.compile(
    rb"(?i)<(?:script|svg|html|iframe|frame|form|body|object|embed|meta[\t\n\f\r ]+http-equiv"
    rb"|!doctype[\t\n\f\r ]+html|\?xml-stylesheet)(?=[\t\n\f\r />])"
    rb"|www\.w3\.org/1999/xhtml|www\.w3\.org/2000/svg")
# File name characters Windows and browsers drop at the end ("x.html." opens as x.html).
_NAME_TAIL = " .\t\r\n\x00"


def extension(name: str) -> str:
    """The lower-case extension a file saved under ``name`` opens with ("" when none)."""
    stem = name.rstrip(_NAME_TAIL).lower()
    dot = stem.rfind(".")
    return stem[dot + 1 :] if dot >= 0 else ""


def _utf16(data: bytes) -> str | None:
    """The codec of UTF-16 markup (with a BOM, or "<" next to NULs as in "<\\0h\\0t\\0m\\0l\\0"),
    which browsers read; None for anything else."""
    head = data[:_HEAD]
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):
        return "utf-16"
    if head.count(b"\x00") * 3 < len(head):
        return None
    if b"<\x00" in head:
        return "utf-16-le"
    return "utf-16-be" if b"\x00<" in head else None


def as_text(data: bytes, charset: str | None) -> str:
    """The attachment as text, UTF-16 markup included."""
    codec = _utf16(data)
    return data.decode(codec, "replace") if codec else decode_bytes(data, charset)


def risky_name(names: Iterable[str]) -> str | None:
    """The extension of a name that opens as a page or a link ("html", "url"), if any."""
    for name in names:
        ext = extension(name)
        if ext in MARKUP_EXTENSIONS or ext in LINK_EXTENSIONS:
            return ext
    return None


def active_markup(data: bytes, content_type: str, names: Iterable[str]) -> str | None:
    """Why this attachment could render as a page or navigate, or None when it cannot.

    Args:
        data: the attachment with its transfer encoding removed.
        content_type: the declared type, lower case.
        names: every file name it was given (Content-Disposition filename, Content-Type name).
    """
    ext = risky_name(names)
    if ext is not None:
        return f"name .{ext}"
    if content_type in MARKUP_TYPES:
        return f"type {content_type}"
    if content_type == "text/plain" or data.startswith(_BINARY_MAGIC):
        return None  # shown as text, or opened by a program of its own
    codec = _utf16(data)
    text = data.decode(codec, "replace").encode("utf-8") if codec else data
    if b"\x00" in text[:_HEAD]:
        return None  # binary data
    if _PAGE_START.match(text) or _ACTIVE.search(text):
        return "content"
    return None


def is_link_file(names: Iterable[str]) -> bool:
    """An internet shortcut (.url, .webloc): a link to defang as text, not markup."""
    return any(extension(name) in LINK_EXTENSIONS for name in names)
