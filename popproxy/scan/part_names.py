"""File names of the parts defang writes: the text version's name and the name parameters.

Shared by the defang of markup attachments (:mod:`popproxy.scan.defang`) and the removal notes
of risky ones (:mod:`popproxy.scan.risky`).
"""

from __future__ import annotations

from email.utils import encode_rfc2231

from popproxy.scan import sniff

# File name characters kept for a text version: most file systems stop at 255 bytes.
MAX_NAME_CHARS = 200


def shown_name(name: str) -> str:
    """``name`` printable and bounded (``MAX_NAME_CHARS``)."""
    return "".join(ch for ch in name if ch.isprintable())[:MAX_NAME_CHARS].strip()


def text_name(name: str) -> str:
    """The name for the text version: printable, bounded, ending in .txt."""
    name = shown_name(name)
    if not name:
        return "attachment.txt"
    return name if sniff.extension(name) == "txt" else name + ".txt"


def name_param(key: str, name: str) -> str:
    """A name parameter every reader parses alike: quoted ASCII, else RFC 2231 UTF-8."""
    if name.isascii() and not any(ch in name for ch in '"\\'):
        return f'{key}="{name}"'
    return f"{key}*={encode_rfc2231(name, 'utf-8')}"
