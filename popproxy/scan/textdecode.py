"""The boundary where payload bytes become text: declared charset first, then fallbacks."""

from __future__ import annotations

import codecs
from functools import lru_cache

# Charset names mail uses that Python's codec registry does not know, mapped to what senders mean.
_ALIASES = {
    "unknown-8bit": "cp1252",
    "x-unknown": "cp1252",
    "unknown": "cp1252",
    "x-user-defined": "cp1252",
    "default": "cp1252",
    "iso-8859-8-i": "iso-8859-8",
    "ks_c_5601-1987": "cp949",
    "x-sjis": "shift_jis",
    "windows-874": "cp874",
    "gb2312": "gb18030",  # gb18030 is a superset; senders labelling GBK text gb2312 are common
    "gbk": "gb18030",
}


@lru_cache(maxsize=256)
def _codec(charset: str | None) -> str | None:
    if not charset:
        return None
    name = charset.strip().strip('"').lower()
    name = _ALIASES.get(name, name)
    try:
        codecs.lookup(name)
    except (LookupError, ValueError):  # ValueError: a NUL in the declared charset name
        return None
    return name


def decode_bytes(data: bytes, charset: str | None) -> str:
    """Decode payload bytes to text without ever raising.

    The declared charset is tried first; unknown or wrong ones fall back to UTF-8 and then
    cp1252 (the commonest mislabelled charsets in mail), with undecodable bytes replaced.
    """
    codec = _codec(charset)
    if codec is not None:
        try:
            return data.decode(codec)
        except (UnicodeError, LookupError, ValueError):
            pass
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        # The declared charset (if any) was wrong; cp1252 maps all but five bytes, so the text
        # stays readable and URLs (ASCII) survive intact.
        return data.decode("cp1252", errors="replace")
