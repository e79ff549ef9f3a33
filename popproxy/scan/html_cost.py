"""How much work Lexbor's tree builder would do on some markup, estimated before parsing it.

Lexbor (like the HTML standard's tree construction, which it follows) searches the stack of
open elements for many start and end tags ("has a p element in button scope", "any other end
tag").  With N elements nested that is O(N^2): 250 KB of ``<div>`` takes 13 s, 1 MB several
minutes, and the C code cannot be interrupted.  Browsers cap the nesting (Blink at 512
elements); Lexbor does not.  So markup is first run through this linear estimate, and markup
whose parse would cost more than :data:`MAX_PARSE_WORK` is not parsed (the defang shows it as
escaped source instead).

The estimate tokenizes like the HTML standard (tags with quoted attributes, comments with their
odd endings, raw text elements) and models the stack of open elements with the common implied
end tags; each start tag is charged the depth of the stack, each end tag the entries it walks.
It does not model every rule of tree construction (foster parenting, foreign content, the
adoption agency), so it is an estimate, not a proof: the scan worker's hard deadline stays the
backstop.  It costs one Python step per tag (~1 us), so it only runs on markup with more than
:data:`SAFE_TAG_COUNT` tags.
"""

from __future__ import annotations

import re

# Below this many "<", parsing cannot be slow whatever the nesting: 4096 nested blocks cost
# Lexbor ~0.1 s.  Honest mail stays far below (the shared corpus' largest ham: ~3,100 tags).
SAFE_TAG_COUNT = 4096
# Lexbor checks each attribute of a tag against those already read (HTML standard: a duplicate
# attribute is a parse error and dropped), walking the tag's list: quadratic in the distinct
# attributes of one tag (20,000 in one tag: 1.5 s, 40,000: 5.6 s).  Each tag longer than this
# many characters is charged (distinct names)^2 / 2; a shorter one cannot hold enough names to
# matter (a few hundred at most: ~50,000 units).
LONG_TAG_CHARS = 2048
# Stack entries the tree builder may walk (~10 ns each in Lexbor): ~0.2 s.  Honest mail: a few
# hundred thousand (the largest HTML part of the corpus, 23,000 tags at depth 20: 460,000).
MAX_PARSE_WORK = 20_000_000

_WS = r"\t\n\f\r "
# A tag from its name to its ">", as the HTML tokenizer reads it: attribute names may hold
# quotes and "=" first, a quote opens a value only after "=", an unclosed quote runs to the end
# of the input.  Possessive throughout, and a tag without ">" matches to the end of the input
# (group 3 empty: the standard's tokenizer drops it there), so the pattern never fails once
# "<" and a letter matched, and never scans the same text twice.
_TAG = re.compile(
    rf"<(/?)([A-Za-z][^{_WS}/>]*+)"
    rf"(?:[{_WS}/]|[^{_WS}/>][^{_WS}/>=]*+"
    rf"(?:[{_WS}]*+=[{_WS}]*+(?:\"[^\"]*+(?:\"|\Z)|'[^']*+(?:'|\Z)|[^{_WS}>\"'][^{_WS}>]*+)?+)?+"
    rf")*+(>|\Z)"
)
_MARKUP = re.compile(r"<[A-Za-z/!?]")
# An attribute name inside a tag's text (a value's words count too: over-charging a rare long
# tag is harmless, under-charging is not).
_ATTRIBUTE_NAME = re.compile(rf"(?<=[{_WS}/])[^{_WS}/>=]++")
_END_TAG_OPEN = re.compile(r"</[A-Za-z]")
_COMMENT_END = re.compile(r"--!?>")
# Elements whose content is text up to their own end tag (RAWTEXT, RCDATA, script data).
_RAW_TEXT = frozenset({"script", "style", "xmp", "iframe", "noembed", "noframes", "textarea",
                       "title"})
_VOID = frozenset({"area", "base", "basefont", "bgsound", "br", "col", "embed", "frame", "hr",
                   "image", "img", "input", "keygen", "link", "meta", "param", "source",
                   "track", "wbr"})
# Start tags that close an open element of their group first (<p> ends a <p>, <td> a <th>).
_IMPLIED = {name: group for group in (
    frozenset({"p"}), frozenset({"li"}), frozenset({"dd", "dt"}), frozenset({"td", "th"}),
    frozenset({"tr"}), frozenset({"option"}), frozenset({"optgroup"}), frozenset({"a"}),
    frozenset({"button"}), frozenset({"nobr"}), frozenset({"select"}),
    frozenset({"thead", "tbody", "tfoot"}), frozenset({"rb", "rt", "rp", "rtc"}),
    frozenset({"h1", "h2", "h3", "h4", "h5", "h6"}),
) for name in group}
# Elements the parser merges into the ones it made itself, never pushes again.
_MERGED = frozenset({"html", "head", "body"})


class _Stack:
    """The open elements: a list of names and a count per name (is one open? in O(1))."""

    def __init__(self) -> None:
        self.names: list[str] = []
        self.open: dict[str, int] = {}

    def push(self, name: str) -> None:
        self.names.append(name)
        self.open[name] = self.open.get(name, 0) + 1

    def pop_to(self, group: frozenset[str]) -> int:
        """Pop up to and including the newest element of ``group``; the entries walked."""
        walked = 0
        names, counts = self.names, self.open
        while names:
            name = names.pop()
            counts[name] -= 1
            walked += 1
            if name in group:
                break
        return walked

    def has(self, group: frozenset[str]) -> bool:
        counts = self.open
        return any(counts.get(name) for name in group)


def parse_work(markup: str) -> int:
    """An estimate of the stack entries Lexbor walks building the tree of ``markup`` (counting
    stops once past MAX_PARSE_WORK)."""
    if markup.count("<") <= SAFE_TAG_COUNT:
        return _long_tags_work(markup) if len(markup) > LONG_TAG_CHARS else 0
    stack = _Stack()
    work = 0
    pos = 0
    while (m := _MARKUP.search(markup, pos)) is not None:
        i = m.start()
        kind = markup[i + 1]
        if kind == "!" and markup.startswith("<!--", i):
            pos = _comment_end(markup, i)
            continue
        if kind in "!?" or (kind == "/" and not _END_TAG_OPEN.match(markup, i)):
            # doctype, bogus comment ("<!x", "<?x", "</1"): to the first ">"; "</>": nothing
            gt = markup.find(">", i + 2)
            pos = len(markup) if gt < 0 else gt + 1
            continue
        tag = _TAG.match(markup, i)
        if tag is None or not tag.group(3):
            break  # a tag without ">": the rest of the input is inside it
        pos = tag.end()
        if pos - i > LONG_TAG_CHARS:
            work += _attribute_work(tag.group(0))
        name = tag.group(2).lower()
        if name in _MERGED:
            continue
        if tag.group(1):  # end tag
            work += stack.pop_to(frozenset((name,))) if stack.open.get(name) else len(stack.names)
            continue
        work += len(stack.names)
        if work > MAX_PARSE_WORK:
            return work  # too costly already: the rest of the input cannot lower it
        implied = _IMPLIED.get(name)
        if implied is not None and stack.has(implied):
            work += stack.pop_to(implied)
        if name in _VOID:
            continue
        if name == "plaintext":
            break  # everything after it is text
        stack.push(name)
        if name in _RAW_TEXT:
            end = re.compile(rf"(?i)</{name}(?=[{_WS}/>])").search(markup, pos)
            pos = len(markup) if end is None else end.start()
    return work


def _long_tags_work(markup: str) -> int:
    """The attribute work of the long tags of markup with few tags (nesting cannot cost)."""
    return sum(
        _attribute_work(tag.group(0))
        for tag in _TAG.finditer(markup)
        if tag.end() - tag.start() > LONG_TAG_CHARS
    )


def _attribute_work(tag: str) -> int:
    """Work of the duplicate-attribute checks in one tag: (distinct names)^2 / 2."""
    names = {name.lower() for name in _ATTRIBUTE_NAME.findall(tag)}
    return len(names) * len(names) // 2


def _comment_end(markup: str, start: int) -> int:
    """Where a comment opened at ``start`` ends: "<!-->" and "<!--->" end at once, others at
    the first "-->" or "--!>" (HTML standard, comment states); the end of input otherwise."""
    if markup.startswith(">", start + 4):
        return start + 5
    if markup.startswith("->", start + 4):
        return start + 6
    end = _COMMENT_END.search(markup, start + 4)
    return len(markup) if end is None else end.end()


def too_costly(markup: str) -> bool:
    """True when building the tree of ``markup`` would cost more than MAX_PARSE_WORK."""
    return parse_work(markup) > MAX_PARSE_WORK


# --- formatting elements re-opened -----------------------------------------------------------

# Formatting elements (the HTML standard's list, less "a", which cannot pile up): one still open
# when a block ends is cloned again before the next text or tag ("reconstruct the active
# formatting elements"), so N of them and M blocks build N*M elements, ~2 us each in Lexbor.
_FORMATTING = re.compile(
    r"(?i)<(/?)(b|big|code|em|font|i|nobr|s|small|strike|strong|tt|u)(?=[\t\n\f\r />])"
)
# Elements such cloning may build before a document counts as too costly (~0.5 s).  Honest mail
# stays far below: the shared corpus' largest estimate is 33,000 (31 open <font> x 1,062 tags).
MAX_RECONSTRUCT_WORK = 250_000


def reconstruct_work(html: str) -> int:
    """An estimate of the elements rebuilt for formatting left open: the most formatting
    elements open at once times the tags that may each trigger a rebuild."""
    tags = html.count("<")
    if tags * tags <= MAX_RECONSTRUCT_WORK:
        return 0  # cannot exceed it: at most one open element per tag
    open_now: dict[str, int] = {}
    total = peak = 0
    for m in _FORMATTING.finditer(html):
        name = m.group(2).lower()
        if not m.group(1):
            open_now[name] = open_now.get(name, 0) + 1
            total += 1
            peak = max(peak, total)
        elif open_now.get(name):
            open_now[name] -= 1
            total -= 1
    return peak * tags


def too_costly_to_parse(html: str) -> bool:
    """Whether Lexbor's tree construction would cost too much on ``html``: deep nesting or
    long tags (:func:`too_costly`), or formatting elements rebuilt after every block."""
    return reconstruct_work(html) > MAX_RECONSTRUCT_WORK or too_costly(html)
