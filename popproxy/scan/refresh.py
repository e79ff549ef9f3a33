"""The URL of a ``<meta http-equiv=refresh>``, read as the HTML standard reads it."""

from __future__ import annotations

_ASCII_WS = " \t\n\f\r"
_TIME_CHARS = "0123456789."


def refresh_url(content: str) -> str:
    """The URL of a ``<meta http-equiv=refresh>`` content, parsed as the HTML standard says.

    "5; url='x'", "0;x" and "0, URL = x" all redirect; "" when there is no URL (a reload).
    """
    pos, end = 0, len(content)

    def skip_ws(i: int) -> int:
        while i < end and content[i] in _ASCII_WS:
            i += 1
        return i

    pos = skip_ws(pos)
    start = pos
    while pos < end and content[pos] in _TIME_CHARS:
        pos += 1
    if pos == start:
        return ""
    if pos < end and content[pos] not in ";," + _ASCII_WS:
        return ""
    pos = skip_ws(pos)
    if pos < end and content[pos] in ";,":
        pos += 1
    pos = skip_ws(pos)
    rest = content[pos:]
    if rest[:3].lower() == "url":
        after = skip_ws(pos + 3)
        if after < end and content[after] == "=":
            pos = skip_ws(after + 1)
    url = content[pos:]
    if url[:1] in ("'", '"'):
        quote, url = url[0], url[1:]
        url = url.split(quote, 1)[0]
    return url.strip()
