"""Links, forms and visible text out of decoded text, HTML and PDF payloads."""

from __future__ import annotations

import html as html_lib
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import ada_url
from selectolax.lexbor import LexborDocumentOptions, LexborHTMLParser, LexborNode

from popproxy.scan import html_cost, html_qr
from popproxy.scan.qr import MediaBudget
from popproxy.scan.refresh import refresh_url

LinkSource = Literal["text", "href", "form", "frame", "refresh", "pdf", "qr"]

# Visible characters of an anchor kept for comparison with its href; the domain a person reads
# sits in the first few dozen characters.
_MAX_ANCHOR_CHARS = 200

# URLs in running text, including the defanged spellings security notices use (hxxp, [.]),
# because a client may still render those as links after "refanging" by the reader.  After the
# scheme any run of slashes and backslashes counts ("https:\\evil.test", "http:/evil.test"
# open in a browser, which reads a backslash as a slash); a bare "http:" followed by text is
# left out: no mail client makes a link of it.
_TEXT_URL = re.compile(
    r"(?i)(?<![\w@])(?:(?:https?|hxxps?|h\[xx\]ps?|ftp)(?::[/\\]{1,8}|\[://\]|\[:\]//)"
    r"|www\d{0,3}(?:\.|\[\.\]))[^\s<>\"'`]{2,2048}"
)
_TRAILING = ".,;:!?)]}>'\"*"
_OBFUSCATION = re.compile(r"(?i)hxxp|h\[xx\]p|\[\.\]|\(\.\)|\[dot\]|\(dot\)|\[:\]|\[://\]")
_REFANG = (
    ("[://]", "://"), ("[:]", ":"), ("[.]", "."), ("(.)", "."), ("[dot]", "."), ("(dot)", "."),
    ("h[xx]p", "http"), ("hxxp", "http"),
)


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
    images: int = 0
    # <img src="data:image/..."> values: pictures carried inside the HTML itself, where a QR
    # code hides from scanners that look at attachments only (popproxy.scan.media).
    data_images: list[str] = field(default_factory=list)
    # Module grids of QR codes drawn with table cells (popproxy.scan.html_qr), looked for when
    # the caller passes the message's media budget.
    drawn_codes: list[html_qr.ModuleGrid] = field(default_factory=list)
    # The HTML was not parsed (its tree would have cost the parser too much, see
    # ``html_extract``): links and text were taken from its source.  Honest mail never is.
    unparsed: bool = False


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


def html_extract(
    html: str, *, attachment: bool = False, media: MediaBudget | None = None
) -> Extracted:
    """Anchors, forms, frames, refreshes and visible text of an HTML document.

    The document is parsed the way a browser parses it (Lexbor, an HTML5-conformant parser):
    a regex tokenizer disagrees with browsers on end tags with attributes (``</style x>``),
    odd comment endings (``<!-->``, ``--!>``) and the like, and each disagreement hides a link
    the reader can click.  Text inside script, style, title, template and comments is not
    visible text.  Relative links are resolved against ``<base href>`` as a browser would.

    Tree construction is not linear in every case (deep nesting, and formatting elements
    re-opened after every block: 40 KB of those took Lexbor 8 s, in C code nothing can
    interrupt), so markup whose tree would cost too much is not parsed: its links and text are
    taken from the source instead, and ``unparsed`` says so.

    With ``media`` (the message's image budget), tables drawn as QR codes are looked for too.
    """
    if html_cost.too_costly_to_parse(html):
        return _unparsed_extract(html, attachment)
    # Without DOM mutation events: the only one, mirroring the chosen <option> into
    # <selectedcontent>, copies text and made "<select>" + "<option>" * N quadratic (0.5 s for
    # 100 KB, 10 s for 500 KB).
    tree = LexborHTMLParser(html, options=LexborDocumentOptions.WO_EVENTS)
    out = _elements(tree, attachment)
    if media is not None:
        out.drawn_codes = html_qr.find_grids(tree, media)
    # Hidden text goes only now, when no node of the tree is referenced any more (removed
    # nodes are freed).  The text nodes left are what a reader sees, in document order.
    tree.strip_tags(list(_HIDDEN), recursive=True)
    text = tree.root.text(separator=" ", strip=True, skip_empty=True) if tree.root else ""
    if text:
        out.text.append(text)
        # Chunks are joined with a space so a URL never runs into the word of the
        # neighbouring element.
        out.links.extend(text_links(text, attachment=attachment))
    return out


# Elements whose content a reader never sees: their text is not visible text and anchor text
# skips them (a template's content is not even in the tree; iframe, noembed and noframes hold
# raw text shown only by browsers without frames or plugins).
_HIDDEN = frozenset({"script", "style", "title", "template", "iframe", "noembed", "noframes"})
_TEXT = "-text"
# Every element that links somewhere or that a rule counts, in one selector (one pass in C,
# results in document order).
_ELEMENTS = "a, svg\\:a, area, form, button, input, iframe, frame, img, meta, script, set, animate"


def _elements(tree: LexborHTMLParser, attachment: bool) -> Extracted:
    """Links and counts from the elements, in document order."""
    page = _Page(_base_url(tree), attachment)
    for node in tree.css(_ELEMENTS):
        name = (node.tag or "").rpartition(":")[2].lower()  # "svg:a" (SVG file) is an "a"
        if name == "a":
            page.anchor(node)
        else:
            _HANDLERS[name](page, node.attributes)
    return page.out


class _Page:
    """What ``html_extract`` collects while it visits the elements of one document."""

    def __init__(self, base: str, attachment: bool) -> None:
        self.out = Extracted()
        self.base = base
        self.attachment = attachment

    def anchor(self, node: LexborNode) -> None:
        attrs = node.attributes
        # SVG links: href, or the older xlink:href that browsers still follow.
        href = attrs.get("href") or attrs.get("xlink:href")
        if href and href.strip():
            self.add(self.resolve(href), "href", _anchor_text(node))

    def resolve(self, url: str) -> str:
        """The URL a browser opens for ``url`` written in this document."""
        url = url.strip()
        if not self.base or not url:
            return url
        try:
            return ada_url.join_url(self.base, url)
        except ValueError:
            return url

    def add(self, url: str | None, source: LinkSource, anchor: str = "") -> None:
        if url and url.strip():
            self.out.links.append(Link(url.strip(), source, anchor, attachment=self.attachment))

    def link_attr(self, attrs: Attrs, name: str, source: LinkSource) -> None:
        value = attrs.get(name)
        if value:
            self.add(self.resolve(value), source)


def _anchor_text(anchor: LexborNode) -> str:
    """The first visible characters inside an anchor, nested anchors and hidden text left out.

    A nested anchor's text is its own (anchors nest only in SVG or across table cells), so
    every node is visited for one anchor at most and the walk stays linear in the document;
    it stops once _MAX_ANCHOR_CHARS are collected.
    """
    parts: list[str] = []
    chars = 0
    stop = anchor.mem_id
    node = anchor.first_child
    while node is not None and chars < _MAX_ANCHOR_CHARS:
        tag = node.tag or ""
        child = None
        if tag == _TEXT:
            text = node.text_content or ""
            parts.append(text)
            chars += len(text)
        elif not tag.startswith(("-", "!")):
            name = tag.rpartition(":")[2].lower()
            if name != "a" and name not in _HIDDEN:
                child = node.first_child
        if child is not None:
            node = child
            continue
        while node is not None and node.mem_id != stop:
            following = node.next
            if following is not None:
                node = following
                break
            node = node.parent
        if node is None or node.mem_id == stop:
            break
    return " ".join("".join(parts).split())[:_MAX_ANCHOR_CHARS]


Attrs = dict[str, str | None]


def _area(walk: _Page, attrs: Attrs) -> None:
    walk.link_attr(attrs, "href", "href")


def _form(walk: _Page, attrs: Attrs) -> None:
    walk.out.forms += 1
    walk.link_attr(attrs, "action", "form")


def _button(walk: _Page, attrs: Attrs) -> None:
    # formaction overrides the form's action for this button: a second form target.
    walk.link_attr(attrs, "formaction", "form")


def _input(walk: _Page, attrs: Attrs) -> None:
    if (attrs.get("type") or "").strip().lower() == "password":
        walk.out.password_inputs += 1
    walk.link_attr(attrs, "formaction", "form")


def _frame(walk: _Page, attrs: Attrs) -> None:
    walk.link_attr(attrs, "src", "frame")


# data: URI images kept per document for QR decoding; the decoding budget (MAX_QR_IMAGES) is
# smaller still, identical ones count once.
_MAX_DATA_IMAGES = 64


def _img(walk: _Page, attrs: Attrs) -> None:
    walk.out.images += 1
    src = (attrs.get("src") or "").lstrip()
    if src[:11].lower() == "data:image/" and len(walk.out.data_images) < _MAX_DATA_IMAGES:
        walk.out.data_images.append(src)


def _script(walk: _Page, attrs: Attrs) -> None:
    walk.out.scripts += 1


def _meta(walk: _Page, attrs: Attrs) -> None:
    if (attrs.get("http-equiv") or "").strip().lower() == "refresh":
        url = refresh_url(attrs.get("content") or "")
        if url:
            walk.add(walk.resolve(url), "refresh")


def _animation(walk: _Page, attrs: Attrs) -> None:
    # SVG animation that sets a link's target (<set attributeName="href" to="javascript:...">):
    # the anchor's own href is harmless, the one the reader clicks is set here.
    target = (attrs.get("attributeName") or attrs.get("attributename") or "").strip().lower()
    if target.rpartition(":")[2] != "href":
        return
    for key in ("to", "from", "values"):
        for value in (attrs.get(key) or "").split(";"):
            walk.add(walk.resolve(value), "href")


_HANDLERS: dict[str, Callable[[_Page, Attrs], None]] = {
    "area": _area,
    "form": _form,
    "button": _button,
    "input": _input,
    "frame": _frame,
    "iframe": _frame,
    "img": _img,
    "meta": _meta,
    "script": _script,
    "set": _animation,
    "animate": _animation,
}


def _base_url(tree: LexborHTMLParser) -> str:
    """The document's base URL: the first ``<base href>`` in tree order, when it is absolute.

    A relative or invalid base falls back to the document's own URL, which a mail has none of.
    """
    base = tree.css_first("base[href]")
    return _absolute(base.attributes.get("href") or "") if base is not None else ""


def _absolute(url: str) -> str:
    """``url`` normalised when it is an absolute URL, else ""."""
    url = url.strip()
    if not url:
        return ""
    try:
        return ada_url.URL(url).href
    except ValueError:
        return ""


# --- markup too costly to parse -----------------------------------------------------------------

# Link attributes in raw markup.  Values are read up to their closing quote or, unclosed, to the
# next quote of that kind (possessive), so each attempt ends where the next one can start.
_WS = r"\t\n\f\r "
_LINK_ATTR = re.compile(
    rf"(?i)(?<![\w:-])(href|xlink:href|action|formaction)[{_WS}]*+=[{_WS}]*+"
    rf"(?:\"([^\"]*+)|'([^']*+)|([^{_WS}\"'>][^{_WS}>]*+))"
)
_BASE_HREF = re.compile(
    rf"(?i)<base[{_WS}/][^<>]*?href[{_WS}]*+=[{_WS}]*+[\"']?+([^\"'{_WS}>]++)"
)
_TAG_LIKE = re.compile(r"<[^<>]*+>?")
_START_TAG = re.compile(rf"(?i)<(form|script|img)(?=[{_WS}/>])")
_PASSWORD_TYPE = re.compile(rf"(?i)\btype[{_WS}]*+=[{_WS}]*+[\"']?+password\b")


def _unparsed_extract(html: str, attachment: bool) -> Extracted:
    """Links and text of markup that is not parsed: every link attribute anywhere in it and
    every URL in its source (comments and scripts included: over-reading beats missing one)."""
    base = _BASE_HREF.search(html)
    page = _Page(_absolute(html_lib.unescape(base.group(1))) if base else "", attachment)
    out = page.out
    out.unparsed = True
    for m in _LINK_ATTR.finditer(html):
        value = html_lib.unescape(m.group(2) or m.group(3) or m.group(4) or "")
        source: LinkSource = "form" if m.group(1).lower().endswith("action") else "href"
        page.add(page.resolve(value), source)
    text = " ".join(html_lib.unescape(_TAG_LIKE.sub(" ", html)).split())
    if text:
        out.text.append(text)
    out.links.extend(text_links(html_lib.unescape(html), attachment=attachment))
    for m in _START_TAG.finditer(html):
        name = m.group(1).lower()
        out.forms += name == "form"
        out.scripts += name == "script"
        out.images += name == "img"
    out.password_inputs = len(_PASSWORD_TYPE.findall(html))
    return out
