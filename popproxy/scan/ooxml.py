"""External targets of Office Open XML documents (.docx, .xlsx, .pptx and their macro forms).

An OOXML file is a zip of XML parts tied together by relationship parts (``*.rels``, ECMA-376
part 2, Open Packaging Conventions).  A relationship with ``TargetMode="External"`` points out
of the document: a hyperlink the reader clicks, or a template, OLE object or frame that Word
fetches on opening.  The latter is how remote-template attacks load their payload
(CVE-2017-0199, "Follina" CVE-2022-30190), so such a target on the web is a signal of its own;
hyperlinks are links like any other.

The relationship parts are parsed with ``defusedxml`` (no DTDs, no entity expansion: a
"billion laughs" part is refused, not expanded), read from the zip with the limits below.
"""

from __future__ import annotations

import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from xml.etree.ElementTree import ParseError

import defusedxml.ElementTree as SafeElementTree
from defusedxml import DefusedXmlException

from popproxy.scan.extract import Link

# Relationship parts read per document: one per part with links (document, headers, footers,
# each slide or sheet).  A 300-slide deck has ~300; more is no document a person wrote by hand.
MAX_RELS_PARTS = 500

# Bytes of one relationship part read.  A part lists one short element per relationship; a
# document with thousands of hyperlinks has a few hundred KB.
MAX_RELS_BYTES = 1024 * 1024

# Relationships looked at per document (all parts together).
MAX_RELATIONSHIPS = 20_000

_ZIP_DIRS = ("word/", "xl/", "ppt/")
_CONTENT_TYPES = "[Content_Types].xml"
# Relationship types (the last segment of the Type URI) that Office loads by itself.
_LOADED_TYPES = frozenset({"attachedtemplate", "oleobject", "frame", "subdocument", "package"})
# Targets a remote load fetches from (file: and relative paths are the author's own disk).
REMOTE_PREFIXES = ("http:", "https:", "\\\\", "//", "mhtml:", "ms-msdt:", "search-ms:")


@dataclass(slots=True)
class ExternalTargets:
    """What a document's relationships point to outside it."""

    links: list[Link] = field(default_factory=list)
    remote_loads: list[str] = field(default_factory=list)  # targets Office fetches on opening
    limited: bool = False  # a limit above was reached: some relationships went unread
    bytes_read: int = 0  # decompressed bytes of relationship parts


def is_ooxml(names: list[str]) -> bool:
    """A zip laid out as an Office Open XML document."""
    return _CONTENT_TYPES in names and any(n.startswith(_ZIP_DIRS) for n in names)


def external_targets(
    archive: zipfile.ZipFile, names: list[str], check: Callable[[], None], max_bytes: int
) -> ExternalTargets:
    """Hyperlinks and remote loads named by the relationship parts of ``archive``, reading at
    most ``max_bytes`` decompressed bytes of them (what is left of the message's budget)."""
    out = ExternalTargets()
    rels = [n for n in names if n.endswith(".rels")]
    if len(rels) > MAX_RELS_PARTS:
        out.limited = True
        rels = rels[:MAX_RELS_PARTS]
    seen = 0
    for name in rels:
        check()
        data = _read(archive, name, min(MAX_RELS_BYTES, max_bytes - out.bytes_read))
        if data is None:
            out.limited = True
            continue
        out.bytes_read += len(data)
        try:
            root = SafeElementTree.fromstring(data, forbid_dtd=True)
        except (ParseError, DefusedXmlException, ValueError):
            continue  # Office would not open it either
        for element in root:
            seen += 1
            if seen > MAX_RELATIONSHIPS:
                out.limited = True
                return out
            _relationship(element.attrib, out)
    return out


def _read(archive: zipfile.ZipFile, name: str, limit: int) -> bytes | None:
    """The part, or None when it is bigger than ``limit`` (read no further than that)."""
    if limit <= 0:
        return None
    with archive.open(name) as member:
        data = member.read(limit + 1)
    return None if len(data) > limit else data


def _relationship(attrs: dict[str, str], out: ExternalTargets) -> None:
    if attrs.get("TargetMode", "").lower() != "external":
        return
    target = attrs.get("Target", "").strip()
    if not target:
        return
    kind = attrs.get("Type", "").rstrip("/").rpartition("/")[2].lower()
    if kind in _LOADED_TYPES and target.lower().startswith(REMOTE_PREFIXES):
        out.remote_loads.append(target)
        out.links.append(Link(target, "frame", attachment=True))
    elif kind == "hyperlink":
        out.links.append(Link(target, "href", attachment=True))
