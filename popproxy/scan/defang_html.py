"""The defang of HTML: the tree a browser builds, every link in it made inert, written back.

What is defanged is what the browser would have linked: the markup is parsed by Lexbor
(selectolax), an HTML5 parser that builds the same tree as browsers (``</style x>``,
``<!-->``, ``--!>``, foreign SVG/MathML content and all), then in that tree

* attributes that navigate, submit or load active content are removed on every element
  (``href``, ``xlink:href``, ``action``, ``formaction``, ``ping``, ``srcdoc``, ``data``, ...;
  ``src`` of frames, embeds, objects), as are ``on*`` event handlers and any attribute whose
  value is a ``javascript:``/``vbscript:`` URL or a ``data:`` URL other than an image;
* ``<script>``, ``<base>``, ``<meta http-equiv=refresh>``, ``<template>`` (declarative
  shadow roots render their content), ``<param>``, SVG animations that set an ``href``, and
  comments (Outlook renders ``<!--[if mso]>`` blocks) are removed; ``<noscript>`` is unwrapped
  so clients with and without scripting read the same markup;
* form controls are disabled, so a password form cannot be filled in;
* URLs in text and in the remaining attribute values are defanged (:func:`defang_text`), and
  after each link its target, resolved as the browser would (``<base href>`` included), is
  shown defanged in a ``<span>``: ``<a>Sign in</a> <span>[hxxps://evil[.]example/x]</span>``.

The tree is then serialised.  A client re-parses that output, and serialising and re-parsing
HTML does not always give the same tree back (namespace confusion, raw-text elements inside
SVG): so the output is parsed again, and neutralised again until its serialisation no longer
changes (one round for all honest mail); if that does not settle, the message is shown as
escaped source.  Markup too costly to parse (:mod:`html_cost`) or to walk (MAX_TREE_TAGS) is
shown as escaped source too.  The output depends only on the input: POP3 sizes depend on it.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass, field

from selectolax.lexbor import LexborHTMLParser, LexborNode

from popproxy.scan.html_cost import too_costly
from popproxy.scan.inert_text import absolute_url, defang_text, shown_target

# Tags ("<") of markup defanged in the tree.  The walk costs ~10-30 us per element (an anchor
# gets a span and its target parsed), so 50,000 bound it to about a second; honest mail stays
# far below (the corpus' largest HTML part: 23,000 tags).  Bigger markup is shown as source.
MAX_TREE_TAGS = 50_000
# Neutralise-serialise-reparse rounds before giving up on a stable output: one for honest mail,
# more when re-parsing our own output builds another tree (mutation XSS).
_MAX_ROUNDS = 3
# Attributes (by local name, so "xlink:href" counts as "href") that navigate when clicked or
# submitted, or load a document, plug-in or background into the page, on any element.
_LINK_ATTRS = frozenset({
    "href", "action", "formaction", "ping", "srcdoc", "background", "poster", "data",
    "codebase", "classid", "archive", "code", "lowsrc", "dynsrc", "longdesc", "manifest",
})
# Elements whose src loads a document, a plug-in or a script (an image's src stays, defanged).
_FRAME_TAGS = frozenset({"iframe", "frame", "embed", "object", "script", "portal",
                         "fencedframe", "applet"})
_REMOVED_TAGS = frozenset({"script", "base", "template", "param", "portal", "fencedframe"})
_SVG_ANIMATIONS = frozenset({"set", "animate", "animatemotion", "animatetransform"})
_CONTROLS = frozenset({"input", "button", "select", "textarea"})
# Elements whose text the serialiser writes unescaped (by local name, also inside SVG where the
# parser does not read them as raw text): a "<" in their text is where re-parsing diverges.
_RAW_PARENTS = frozenset({"style", "script", "xmp", "iframe", "noembed", "noframes",
                          "plaintext", "noscript"})
# Where an SVG or MathML subtree holds HTML again (HTML standard, integration points).
_INTEGRATION_POINTS = frozenset({"foreignobject", "desc", "title", "mi", "mo", "mn", "ms",
                                 "mtext", "annotation-xml"})
_FOREIGN_ROOTS = frozenset({"svg", "math"})
_SHOWN_TAGS = frozenset({"a", "area"})
# A URL scheme that runs code, after the characters browsers ignore in front of and inside it.
_URL_NOISE = re.compile(r"[\x00-\x20]+")
_SCRIPT_SCHEMES = ("javascript:", "vbscript:", "livescript:")
_NOSCRIPT = re.compile(r"(?i)noscript")


def defang_html(markup: str) -> str:
    """The markup with every link inert and each anchor's target shown after it as text."""
    if markup.count("<") > MAX_TREE_TAGS or too_costly(markup):
        return _as_source(markup)
    tree = LexborHTMLParser(markup)
    for _ in range(_MAX_ROUNDS):
        _neutralise(tree)
        out = tree.html or ""
        # What the reader's client builds from our output: if it serialises to the same text,
        # it has the same elements and attributes as the tree we neutralised (our text has
        # "<" only in tags: comments are gone, text and attribute values are escaped, raw text
        # has none), so nothing live.  Else neutralise what the client would build.
        tree = LexborHTMLParser(out)
        if tree.html == out:
            break
    else:
        return _as_source(markup)
    # <noscript> is unwrapped, so a client running scripts (which reads noscript content as
    # text) builds the same tree; checked whenever the word occurs at all.
    if _NOSCRIPT.search(out) and LexborHTMLParser(out, scripting=True).html != out:
        return _as_source(markup)
    return out


def _as_source(markup: str) -> str:
    """The markup shown as text: inert whatever it holds, and linear to produce."""
    return f"<pre>{html.escape(defang_text(markup))}</pre>"


@dataclass
class _Edits:
    """Changes to the tree, applied after the walk (changing a tree while walking it crashes
    Lexbor).  ``changes`` counts every change, attribute edits made in place included."""

    texts: list[tuple[LexborNode, str]] = field(default_factory=list)
    shown: list[tuple[LexborNode, str]] = field(default_factory=list)
    removed: list[tuple[LexborNode, bool]] = field(default_factory=list)  # (node, unwrap)
    changes: int = 0


def _neutralise(tree: LexborHTMLParser) -> int:
    """Make every link in the tree inert; the number of changes made (0: nothing was live)."""
    root = tree.root
    if root is None:
        return 0
    base_node = tree.css_first("base[href]")  # the first one with href sets the base URL
    base = absolute_url(base_node.attributes.get("href") or "") if base_node else None
    edits = _Edits()
    for node, parent_tag, foreign in _walk(root.parent or root):
        if node.is_comment_node:
            edits.removed.append((node, False))
        elif node.is_text_node:
            _defang_text_node(node, parent_tag, edits)
        elif node.is_element_node:
            _neutralise_element(node, foreign, base, edits)
    for node, text in edits.texts:
        node.replace_with(text)
    for after, shown in reversed(edits.shown):  # reversed: several after one SVG keep order
        span = tree.create_node("span")
        span.insert_child(f"[{shown}]")
        after.insert_after(span)
        after.insert_after(" ")
    for node, unwrap in reversed(edits.removed):  # descendants before their ancestors
        if unwrap:
            node.unwrap(delete_empty=True)
        else:
            node.decompose()
    return edits.changes + len(edits.texts) + len(edits.shown) + len(edits.removed)


def _walk(start: LexborNode) -> list[tuple[LexborNode, str, LexborNode | None]]:
    """Every node in document order, with its parent's tag and the outermost SVG or MathML
    element it is inside (None in HTML content).  Iterative: nesting depth is unbounded."""
    out: list[tuple[LexborNode, str, LexborNode | None]] = []
    todo: list[tuple[LexborNode, str, LexborNode | None]] = [(start, "", None)]
    while todo:
        node, parent_tag, foreign = todo.pop()
        out.append((node, parent_tag, foreign))
        if not (node.is_element_node or node.is_document_node):
            continue
        tag = (node.tag or "").lower()
        inner = foreign
        if tag in _FOREIGN_ROOTS and foreign is None:
            inner = node
        elif tag in _INTEGRATION_POINTS:
            inner = None
        children = list(node.iter(include_text=True))
        todo.extend((child, tag, inner) for child in reversed(children))
    return out


def _defang_text_node(node: LexborNode, parent_tag: str, edits: _Edits) -> None:
    text = node.text_content or ""
    new = defang_text(text)
    if parent_tag in _RAW_PARENTS and "<" in new:
        new = new.replace("<", "\uff1c")  # FULLWIDTH LESS-THAN SIGN: reads the same
    if new != text:
        edits.texts.append((node, new))


def _neutralise_element(
    node: LexborNode, foreign: LexborNode | None, base: str | None, edits: _Edits
) -> None:
    tag = (node.tag or "").lower()
    attrs = node.attributes
    if (tag in _REMOVED_TAGS
            or (tag == "meta" and (attrs.get("http-equiv") or "").strip().lower() == "refresh")
            or (tag in _SVG_ANIMATIONS and _sets_href(attrs))):
        edits.removed.append((node, False))
        return
    if tag == "noscript":
        edits.removed.append((node, True))
    target = None
    for name, value in attrs.items():
        key = name.lower()
        if _is_live(key, tag, value or ""):
            if key.rpartition(":")[2] == "href" and target is None and value:
                target = value
            del node.attrs[name]
            edits.changes += 1
        elif value and (new := defang_text(value)) != value:
            node.attrs[name] = new
            edits.changes += 1
    if tag in _CONTROLS and "disabled" not in attrs:
        node.attrs["disabled"] = ""
        edits.changes += 1
    if foreign is None and tag in _FOREIGN_ROOTS:
        foreign = node
    in_math = foreign is not None and (foreign.tag or "").lower() == "math"
    # By local name: in XHTML read as XML (an attachment), <x:a> is a link too.
    if target is not None and (tag.rpartition(":")[2] in _SHOWN_TAGS or in_math):
        # Shown after the link, or after the whole SVG/MathML: HTML is not rendered inside it.
        edits.shown.append((foreign or node, shown_target(target, base)))


def _sets_href(attrs: dict[str, str | None]) -> bool:
    target = (attrs.get("attributeName") or attrs.get("attributename") or "").strip().lower()
    return target.rpartition(":")[2] == "href"


def _is_live(key: str, tag: str, value: str) -> bool:
    """Does this attribute navigate, load active content or run code?"""
    if key.startswith("on") or key.rpartition(":")[2] in _LINK_ATTRS:
        return True
    if key == "src" and tag in _FRAME_TAGS:
        return True
    if ":" not in value:
        return False
    url = _URL_NOISE.sub("", value).lower()
    return url.startswith(_SCRIPT_SCHEMES) or (
        url.startswith("data:") and not url.startswith("data:image/"))
