"""External targets and macros of OpenDocument files (.odt, .ods, .odp, .odg and templates).

An OpenDocument package (OASIS ODF 1.3 part 2) is a zip whose first member, ``mimetype``, names
the kind (``application/vnd.oasis.opendocument.text``...), whatever the file's name or declared
type.  Its content (``content.xml``) and styles (``styles.xml``), and those of its embedded
objects (``Object 1/content.xml``), point out of the document with ``xlink:href`` attributes
(ODF 1.3 part 3, XLink 1.0): a hyperlink the reader clicks (``text:a``, ``draw:a``, an event
listener that opens a URL), or an image, object, frame or linked section the office suite loads
by itself.  A load from the web is the ODF form of the
OOXML remote template (a tracking beacon at best, an NTLM hash leak through a ``\\\\host`` path
at worst), so it counts as ``attach-office-remote-load`` does for OOXML; hyperlinks are links
like any other.  Macros live in ``Basic/`` (StarBasic modules) and ``Scripts/`` (Python,
JavaScript, BeanShell) members.

The XML is parsed with ``defusedxml`` (no DTD, no entity expansion) as a stream: fed in chunks,
each element's attributes looked at as it starts, nothing kept but the links, so memory stays
flat and time linear in the bytes read, within the limits below.
"""

from __future__ import annotations

import zipfile
import zlib
from collections.abc import Callable
from xml.etree.ElementTree import ParseError

from defusedxml import DefusedXmlException
from defusedxml.ElementTree import DefusedXMLParser

from popproxy.scan.extract import Link
from popproxy.scan.ooxml import REMOTE_PREFIXES, ExternalTargets

# Bytes of one XML part read.  content.xml holds the whole document (a big spreadsheet has
# megabytes of it); the per-message container budget passed in bounds all parts together.
MAX_ODF_PART_BYTES = 8 * 1024 * 1024

# External targets kept per document.  A document with thousands of hyperlinks (a link list)
# is honest; past this the message's link pool would be full anyway (limits.MAX_LINK_CANDIDATES).
MAX_ODF_LINKS = 5_000

# File name extensions of OpenDocument files and templates (ODF 1.3 part 2, appendix C): zip
# members by these names are opened (other names are found by the mimetype member).
EXTENSIONS = frozenset({"odt", "ods", "odp", "odg", "odf", "odm", "odb",
                        "ott", "ots", "otp", "otg"})

# The parts that carry links (ODF 1.3 part 2, section 3.1).  An embedded object (a chart, a
# formula, a document inside a presentation) is a sub-document with parts of its own, in a
# directory ("Object 1/content.xml"): read too, or a link put there would go unjudged.
_PARTS = ("content.xml", "styles.xml")
# Parts read per document, its own and its objects': a hundred charts is a big report; past
# this the document is a limit (limit-container), never cleaner.
MAX_ODF_PARTS = 200
_MIMETYPE = "mimetype"
_ODF_TYPE = b"application/vnd.oasis.opendocument."
# Bytes of the mimetype member read: the longest ODF media type is ~50 bytes.
_MIMETYPE_BYTES = 128
# Bytes fed to the parser at once, between two checks of the scan's time budget.
_CHUNK = 64 * 1024

_XLINK_HREF = "{http://www.w3.org/1999/xlink}href"
_TEXT = "{urn:oasis:names:tc:opendocument:xmlns:text:1.0}"
_DRAW = "{urn:oasis:names:tc:opendocument:xmlns:drawing:1.0}"
_STYLE = "{urn:oasis:names:tc:opendocument:xmlns:style:1.0}"
_TABLE = "{urn:oasis:names:tc:opendocument:xmlns:table:1.0}"
# Elements whose target is clicked (event listeners, in the script, presentation and office
# namespaces, are found by their local name).
_CLICKED = frozenset({_TEXT + "a", _DRAW + "a"})
# Elements whose target the office suite loads on opening or display.
_LOADED = frozenset({
    _DRAW + "image", _DRAW + "object", _DRAW + "object-ole", _DRAW + "plugin",
    _DRAW + "floating-frame", _DRAW + "applet", _DRAW + "fill-image",
    _STYLE + "background-image", _TEXT + "section-source", _TABLE + "table-source",
})
_LISTENER = "}event-listener"
# Module files of macro libraries: Basic/<library>/<module>.xml beside the library's index
# (script-lb.xml) and dialogs; any file under Scripts/<language>/.
_BASIC_INDEXES = frozenset({"script-lb.xml", "script-lc.xml", "dialog-lb.xml", "dialog-lc.xml"})


def is_odf(archive: zipfile.ZipFile, names: list[str]) -> bool:
    """A zip whose ``mimetype`` member names an OpenDocument type."""
    if _MIMETYPE not in names:
        return False
    with archive.open(_MIMETYPE) as member:
        return member.read(_MIMETYPE_BYTES).startswith(_ODF_TYPE)


def has_macros(names: list[str]) -> bool:
    """An OpenDocument package (by its manifest and mimetype) with macro modules."""
    if _MIMETYPE not in names or "META-INF/manifest.xml" not in names:
        return False
    for name in names:
        if name.endswith("/"):
            continue
        parts = name.split("/")
        if parts[0] == "Scripts" and len(parts) >= 3:
            return True
        if parts[0] == "Basic" and len(parts) == 3 and parts[2] not in _BASIC_INDEXES:
            return True
    return False


def external_targets(
    archive: zipfile.ZipFile, names: list[str], check: Callable[[], None], max_bytes: int
) -> ExternalTargets:
    """Hyperlinks and remote loads of the content and styles of ``archive`` and of its embedded
    objects, reading at most ``max_bytes`` decompressed bytes of them (what is left of the
    message's budget)."""
    out = ExternalTargets()
    parts = _link_parts(names)
    for name in parts[:MAX_ODF_PARTS]:
        if out.limited:
            break
        room = min(MAX_ODF_PART_BYTES, max_bytes - out.bytes_read)
        _parse(archive, name, room, check, out)
    if len(parts) > MAX_ODF_PARTS:
        out.limited = True  # objects past the cap were not read
    return out


def _link_parts(names: list[str]) -> list[str]:
    """The document's content and styles, then its embedded objects' (nested ones too)."""
    own = [name for name in _PARTS if name in names]
    embedded = [name for name in names if "/" in name and not name.startswith("META-INF/")
                and name.rsplit("/", 1)[1] in _PARTS]
    return own + embedded


def _parse(
    archive: zipfile.ZipFile, name: str, room: int, check: Callable[[], None], out: ExternalTargets
) -> None:
    """Feed one part to the parser, chunk by chunk, until its end, a limit or an error."""
    parser = DefusedXMLParser(target=_Collector(out), forbid_dtd=True)
    left = room
    try:
        with archive.open(name) as member:
            while not out.limited:
                chunk = member.read(min(_CHUNK, max(left, 0) + 1))
                if not chunk:
                    return
                if len(chunk) > left:
                    out.limited = True  # the part goes on past the budget
                    return
                left -= len(chunk)
                out.bytes_read += len(chunk)
                parser.feed(chunk)
                check()
    except _PART_ERRORS:
        return  # the office suite would not open it either; links before the error are kept


# A part that is not XML (or has a DTD), or a damaged member: read no further.
_PART_ERRORS = (ParseError, DefusedXmlException, ValueError, zipfile.BadZipFile, zlib.error,
                OSError, EOFError, NotImplementedError, RuntimeError)


class _Collector:
    """A parser target: each element's external target, as the element starts."""

    def __init__(self, out: ExternalTargets) -> None:
        self._out = out

    def start(self, tag: str, attrib: dict[str, str]) -> None:
        target = attrib.get(_XLINK_HREF, "").strip()
        if not target or target.startswith("#"):
            return  # none, or a place inside the document
        remote = target.lower().startswith(REMOTE_PREFIXES)
        if tag in _LOADED:
            if remote:
                self._keep(Link(target, "frame", attachment=True))
                self._out.remote_loads.append(target)
        elif tag in _CLICKED or tag.endswith(_LISTENER) or remote:
            self._keep(Link(target, "href", attachment=True))

    def _keep(self, link: Link) -> None:
        if len(self._out.links) >= MAX_ODF_LINKS:
            self._out.limited = True
            return
        self._out.links.append(link)
