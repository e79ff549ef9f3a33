"""URLs in running text made unclickable but still readable: ``hxxps://evil[.]example/x``.

The convention of security notices: a person can read where a link pointed, no mail client
turns it back into a link (autolinkers want ``http://``, ``https://``... or ``www.``).  Used for
text/plain parts, for the text and attribute values of HTML trees (:mod:`defang_html`) and for
the targets shown after a defanged anchor.

Both patterns are linear on hostile text: every quantifier is possessive or over a class the
next token cannot start with, so a failed match never backtracks over what it consumed
(``tests/scan/test_defang_html.py`` times them on 100 KB inputs against a linear scan).
"""

from __future__ import annotations

import re

import ada_url

_URL = re.compile(r"(?i)\b(https?|ftp|wss?)://([^\s/?#<>\"'\\]*+)")
# Labels cannot contain ".", so possessive label runs give up nothing a match needs.
_WWW = re.compile(r"(?i)(?<![\w./\[])(www\d{0,3})\.([a-z0-9-]++(?:\.[a-z0-9-]++)+)")
# Whatever either pattern can match contains one of these.
_HINT = re.compile(r"(?i)://|www")
_SCHEME_FANG = {"http": "hxxp", "https": "hxxps", "ftp": "fxp", "ws": "wxs", "wss": "wxss"}
# "http://http://x": the host of the first match swallows the second scheme ("http:"), which
# the next pass defangs; a host never contains "/", so two passes always suffice and the other
# two are a margin.  Each pass is linear.
_MAX_PASSES = 4
# Without a <base href>, what a relative link resolves against depends on the client; a
# scheme-relative "//evil.example/x" still names its host, which this base brings out.
_PLACEHOLDER_HOST = "popproxy.invalid"
_PLACEHOLDER_BASE = f"https://{_PLACEHOLDER_HOST}/"


def _url(m: re.Match[str]) -> str:
    scheme = _SCHEME_FANG.get(m.group(1).lower(), m.group(1))
    return f"{scheme}://{m.group(2).replace('.', '[.]')}"


def _www(m: re.Match[str]) -> str:
    return f"{m.group(1)}[.]{m.group(2).replace('.', '[.]')}"


def defang_text(text: str) -> str:
    """Make URLs in running text unclickable: scheme to hxxp, dots in the host bracketed.

    Idempotent: defanged text has no ``http://`` and no ``www.`` left to match.
    """
    if not _HINT.search(text):
        return text  # most text and attribute values: one scan instead of two substitutions
    for _ in range(_MAX_PASSES):
        new = _URL.sub(_url, text)
        if new == text:
            break
        text = new
    return _WWW.sub(_www, text)


def shown_target(href: str, base: str | None) -> str:
    """The defanged text shown for a link target: where a browser would have gone.

    The target is resolved as a browser resolves it (WHATWG URL rules: against the document's
    ``<base href>``, ``https:evil.example`` and ``http:/evil.example`` read as hosts, control
    characters and blanks around it dropped, "//host" taking the page's scheme, https in
    webmail), so the reader sees the real host.  A relative target, or one no browser can
    resolve, is shown as written.
    """
    if base:
        try:
            return defang_text(ada_url.join_url(base, href))
        except ValueError:
            return defang_text(href)
    url = absolute_url(href)
    if url is None:
        try:
            url = ada_url.join_url(_PLACEHOLDER_BASE, href)
        except ValueError:
            return defang_text(href)
        if ada_url.URL(url).hostname == _PLACEHOLDER_HOST:
            return defang_text(href)  # relative: where it goes depends on the client
    return defang_text(url)


def absolute_url(href: str) -> str | None:
    """``href`` as an absolute URL, or None when it is relative or not a URL."""
    try:
        return ada_url.URL(href).href
    except ValueError:
        return None
