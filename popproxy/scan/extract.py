"""Links, forms and visible text out of decoded text, HTML and PDF payloads."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from html.parser import HTMLParser
from typing import Literal

LinkSource = Literal["text", "href", "form", "frame", "refresh", "pdf"]

# Visible characters of an anchor kept for comparison with its href; the domain a person reads
# sits in the first few dozen characters.
_MAX_ANCHOR_CHARS = 200

# URLs in running text, including the defanged spellings security notices use (hxxp, [.]),
# because a client may still render those as links after "refanging" by the reader.
_TEXT_URL = re.compile(
    r"(?i)(?<![\w@])(?:(?:https?|hxxps?|h\[xx\]ps?|ftp)(?:://|\[://\]|\[:\]//)"
    r"|www\d{0,3}(?:\.|\[\.\]))[^\s<>\"'`]{2,2048}"
)
_TRAILING = ".,;:!?)]}>'\"*"
_OBFUSCATION = re.compile(r"(?i)hxxp|h\[xx\]p|\[\.\]|\(\.\)|\[dot\]|\(dot\)|\[:\]|\[://\]")
_REFANG = (
    ("[://]", "://"), ("[:]", ":"), ("[.]", "."), ("(.)", "."), ("[dot]", "."), ("(dot)", "."),
    ("h[xx]p", "http"), ("hxxp", "http"),
)
_PDF_URI = re.compile(rb"/URI\s*\(([^)]{1,2048})\)")
_REFRESH_URL = re.compile(r"(?i)url\s*=\s*['\"]?([^'\"\s>]+)")


@dataclass(frozen=True, slots=True)
class Link:
    """A link found in a message.

    Attributes:
        url: the URL, refanged when it was written obfuscated.
        source: where it was found (running text, an anchor href, a form action, ...).
        anchor_text: for hrefs, the text a reader sees.
        obfuscated: written as hxxp://, example[.]test and the like.
        attachment: found inside an attachment rather than the message body.
    """

    url: str
    source: LinkSource
    anchor_text: str = ""
    obfuscated: bool = False
    attachment: bool = False


@dataclass(slots=True)
class Extracted:
    """What one text or HTML payload contains."""

    links: list[Link] = field(default_factory=list)
    text: list[str] = field(default_factory=list)
    forms: int = 0
    password_inputs: int = 0
    scripts: int = 0


def refang(url: str) -> str:
    """Undo the usual link defanging (hxxp, [.], (dot)) so the host can be analysed."""
    out = url
    for old, new in _REFANG:
        out = re.sub(re.escape(old), new, out, flags=re.IGNORECASE) if old in out.lower() else out
    return out


def text_links(text: str, *, attachment: bool = False) -> list[Link]:
    """Every URL written in running text."""
    links = []
    for m in _TEXT_URL.finditer(text):
        raw = m.group(0).rstrip(_TRAILING)
        obfuscated = bool(_OBFUSCATION.search(raw))
        url = refang(raw) if obfuscated else raw
        if url.lower().startswith("www"):
            url = "http://" + url
        links.append(Link(url, "text", obfuscated=obfuscated, attachment=attachment))
    return links


def pdf_links(data: bytes) -> list[Link]:
    """URI actions of a PDF (uncompressed objects only; compressed streams are not inflated)."""
    return [
        Link(m.group(1).decode("latin-1").strip(), "pdf", attachment=True)
        for m in _PDF_URI.finditer(data)
    ]


def html_extract(html: str, *, attachment: bool = False) -> Extracted:
    """Anchors, forms, frames, refreshes and visible text of an HTML document.

    html.parser never raises on malformed markup in 3.11, but a bug there must not lose what was
    already found, so the partial result is kept on any error.
    """
    parser = _Collector(attachment)
    try:
        parser.feed(html)
        parser.close()
    except (AssertionError, ValueError, IndexError):
        pass
    parser.finish_anchor()
    for chunk in parser.out.text:
        parser.out.links.extend(text_links(chunk, attachment=attachment))
    return parser.out


class _Collector(HTMLParser):
    def __init__(self, attachment: bool) -> None:
        super().__init__(convert_charrefs=True)
        self.out = Extracted()
        self._attachment = attachment
        self._skip_depth = 0
        self._anchor_href: str | None = None
        self._anchor_text: list[str] = []

    def _add(self, url: str | None, source: LinkSource, anchor: str = "") -> None:
        if url and url.strip():
            self.out.links.append(Link(url.strip(), source, anchor, attachment=self._attachment))

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "a":
            self.finish_anchor()
            self._anchor_href = a.get("href")
        elif tag == "area":
            self._add(a.get("href"), "href")
        elif tag == "form":
            self.out.forms += 1
            self._add(a.get("action"), "form")
        elif tag == "input" and (a.get("type") or "").lower() == "password":
            self.out.password_inputs += 1
        elif tag in ("iframe", "frame"):
            self._add(a.get("src"), "frame")
        elif tag == "meta" and (a.get("http-equiv") or "").lower() == "refresh":
            m = _REFRESH_URL.search(a.get("content") or "")
            self._add(m.group(1) if m else None, "refresh")
        elif tag in ("script", "style", "title"):
            self.out.scripts += tag == "script"
            self._skip_depth += 1

    def handle_endtag(self, tag: str) -> None:
        if tag == "a":
            self.finish_anchor()
        elif tag in ("script", "style", "title") and self._skip_depth:
            self._skip_depth -= 1

    def handle_data(self, data: str) -> None:
        if self._skip_depth:
            return
        self.out.text.append(data)
        if self._anchor_href is not None and sum(map(len, self._anchor_text)) < _MAX_ANCHOR_CHARS:
            self._anchor_text.append(data)

    def finish_anchor(self) -> None:
        if self._anchor_href is not None:
            text = " ".join("".join(self._anchor_text).split())[:_MAX_ANCHOR_CHARS]
            self._add(self._anchor_href, "href", text)
        self._anchor_href = None
        self._anchor_text = []
