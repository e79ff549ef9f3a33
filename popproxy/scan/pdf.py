"""Links, form actions, visible text and QR codes of a PDF attachment, read with pypdf.

pypdf inflates compressed streams and object streams, which a byte scan cannot see through, but
it is pure Python and a hostile PDF can make it slow: every step is bounded (bytes, pages,
annotations, text, images) and run under a pypdf configuration with tight decompression limits.
A PDF pypdf cannot read is not clean: its uncompressed bytes are still searched for URI actions
(:func:`raw_uri_links`, the floor), and the failure is a signal.
"""

from __future__ import annotations

import io
import logging
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pypdf
from pypdf.errors import LimitReachedError
from pypdf.generic import ArrayObject, DictionaryObject, StreamObject

from popproxy.scan.extract import Link, text_links
from popproxy.scan.qr import MediaBudget, admit, decode_qr_image, decode_qr_urls

# Bytes of a PDF handed to pypdf.  Phishing PDFs are one or two pages (tens to hundreds of KB).
# pypdf's object parser is pure Python: object syntax (not stream data, which it skips) reads at
# ~1.5 MB/s, a 4 MB hex string in an annotation took 2.5 s, so this keeps one PDF within about
# half the scan budget (past the budget the worker is killed: unscanned, never clean).  Bigger
# PDFs get the byte scan only (honest mail attaches big reports: no evidence).
MAX_PDF_BYTES = 4 * 1024 * 1024

# PDFs per message read with pypdf (~5-50 ms each); the rest get the byte scan.
MAX_PDFS_PER_MESSAGE = 4

# Pages inspected per PDF.  The lure and the button of a phishing PDF are on its first page;
# honest PDFs run to hundreds of pages, so pages past this are no evidence and are not read.
MAX_PDF_PAGES = 10

# Pages whose text and pictures (QR codes) are read: the first ones, where the lure and the code
# of a phishing PDF are.  Text extraction and image decoding are pure Python (~10 ms a page),
# links are cheap and read from all MAX_PDF_PAGES.
MAX_PDF_MEDIA_PAGES = 2

# Annotations (links, form widgets) read per PDF.  A page of a honest PDF has a few dozen; a
# PDF with thousands is built to make a reader slow.
MAX_PDF_ANNOTATIONS = 500

# Actions followed per annotation through /Next chains (PDF 32000-1 12.6.2): a chain is one or
# two long in practice, and a cycle must not loop.
MAX_ACTION_CHAIN = 8

# Characters of visible text kept per PDF for the lure rules and for URLs in the text: the lure
# of a phishing PDF is a few sentences.
MAX_PDF_TEXT_CHARS = 20_000

# Decoded content-stream bytes text extraction may read, per page and per PDF.  pypdf's
# extraction is pure Python (~1.5 MB/s): a 43 KB PDF whose content inflates to 15 MB ran for
# 10 s.  A page of text is 5-50 KB; pages over the cap (maps, CAD drawings) are not read for
# text, which only feeds the weak lure rules: no evidence either way.
MAX_PDF_CONTENT_BYTES = 256 * 1024
MAX_PDF_CONTENT_TOTAL = 1024 * 1024

# Pixels of an image inside a PDF decoded by pypdf for QR codes (JPEG streams go to Pillow with
# the mail-image limits instead): 4 MP is 12 MB as RGB, inside the decompression cap below.
MAX_PDF_IMAGE_PIXELS = 4_000_000

# Characters of a JavaScript action searched for URLs (app.launchURL("https://...")).
MAX_PDF_SCRIPT_CHARS = 64 * 1024

# pypdf's own limits, tightened from its defaults: every decompression stops at 16 MiB, arrays
# and dictionaries at 5,000 entries (its object parser reads ~1 MB/s: 20,000 annotations in one
# array took 1.9 s; honest PDFs stay far below), the page tree at 5,000 pages (pypdf reads every
# page dictionary to find page 1), and no external jbig2dec program is ever started.  Hitting
# one while reading the document's structure gives ``limit-pdf`` (weighted to tag, like every
# limit-* signal).
_PYPDF_LIMITS: dict[str, Any] = {
    "array_maximum_element_count": 5_000,
    "dictionary_maximum_element_count": 5_000,
    "page_tree_maximum_entries": 5_000,
    "page_tree_maximum_page_entries": 100_000,  # dictionary entries of all pages together
    "stream_parsing_work_maximum_count": 200_000,
    "maximum_declared_stream_length": 16 * 1024 * 1024,
    "array_based_stream_maximum_output_length": 16 * 1024 * 1024,
    "jbig2_maximum_output_length": 16 * 1024 * 1024,
    "lzw_maximum_output_length": 16 * 1024 * 1024,
    "run_length_maximum_output_length": 16 * 1024 * 1024,
    "zlib_maximum_output_length": 16 * 1024 * 1024,
    "brotli_maximum_output_length": 16 * 1024 * 1024,
    "image_maximum_buffer_size": 64 * 1024 * 1024,
    "stream_decoding_work_maximum_length": 64 * 1024 * 1024,
    "jbig2dec_binary": None,
}

# A PDF URI action written uncompressed: "/URI (http://...)".  The string is read up to its
# first unescaped parenthesis (the host comes before any), so each attempt stops where the next
# "/URI(" starts: linear in the file.
_PDF_URI = re.compile(rb"/URI\s*+\(((?:[^()\\]|\\.){1,2048})")

# Hostile PDFs make pypdf log a warning per broken object: thousands of lines per message.
logging.getLogger("pypdf").setLevel(logging.ERROR)


@dataclass(slots=True)
class PdfFindings:
    """What one PDF yields: links, visible text, and what kept it from being read."""

    links: list[Link] = field(default_factory=list)
    text: list[str] = field(default_factory=list)
    qr_urls: list[str] = field(default_factory=list)
    # "encrypted", "limit" (a pypdf limit hit reading the structure), "unreadable", or "".
    problem: str = ""
    content_read: int = 0  # decoded content-stream bytes given to text extraction

    def failed(self, exc: Exception) -> None:
        """Record why reading stopped (the first reason counts)."""
        if not self.problem:
            self.problem = "limit" if isinstance(exc, LimitReachedError) else "unreadable"


def raw_uri_links(data: bytes, found: PdfFindings | None = None) -> list[Link]:
    """URI actions written uncompressed in the file's bytes (the floor when pypdf cannot read).

    At most MAX_PDF_ANNOTATIONS distinct URLs; past that ``found`` records the limit.
    """
    urls: dict[str, None] = {}
    for m in _PDF_URI.finditer(data):
        url = m.group(1).decode("latin-1").strip()
        if url in urls:
            continue
        if len(urls) >= MAX_PDF_ANNOTATIONS:
            if found is not None:
                found.problem = "limit"
            break
        urls[url] = None
    return [Link(url, "pdf", attachment=True) for url in urls]


def read_pdf(data: bytes, images: MediaBudget, check: Callable[[], None]) -> PdfFindings:
    """Links, text and QR codes of a PDF, within the limits above.

    ``check`` is the scanner's time-budget checkpoint: it is called between pages and between
    annotations, outside pypdf's own code, so a budget overrun propagates as the scanner expects.
    """
    found = PdfFindings()
    if len(data) > MAX_PDF_BYTES or images.pdfs >= MAX_PDFS_PER_MESSAGE:
        found.links = raw_uri_links(data, found)
        return found
    images.pdfs += 1
    try:
        _read(data, found, images, _guarded(check))
    except _CheckpointRaised as raised:
        raise raised.args[0] from None
    if found.problem:
        found.links.extend(raw_uri_links(data, found))
    return found


def _read(
    data: bytes, found: PdfFindings, images: MediaBudget, check: Callable[[], None]
) -> None:
    with pypdf.apply_configuration(**_PYPDF_LIMITS):
        reader = _open(data, found)
        if reader is None:
            return
        _document_actions(reader, found)
        for number, page in enumerate(_pages(reader, found)):
            check()
            _page(page, found, images, check, media=number < MAX_PDF_MEDIA_PAGES)


def _open(data: bytes, found: PdfFindings) -> pypdf.PdfReader | None:
    try:
        reader = pypdf.PdfReader(io.BytesIO(data), strict=False)
        if reader.is_encrypted and not reader.decrypt(""):
            # A user password: nothing inside can be read (owner-only protection opens with "").
            found.problem = "encrypted"
            return None
        return reader
    except Exception as exc:
        # pypdf raises many kinds on a broken file (PdfReadError, ValueError, KeyError,
        # RecursionError, LimitReachedError ...).
        found.failed(exc)
        return None


def _pages(reader: pypdf.PdfReader, found: PdfFindings) -> Iterator[pypdf.PageObject]:
    try:
        count = min(len(reader.pages), MAX_PDF_PAGES)
    except Exception as exc:
        found.failed(exc)
        return
    for number in range(count):
        try:
            page = reader.pages[number]
        except Exception as exc:
            found.failed(exc)
            return
        yield page


class _CheckpointRaised(BaseException):
    """Carries the checkpoint's exception (the scanner's budget overrun) past the
    ``except Exception`` clauses that catch pypdf's errors; re-raised as it was by read_pdf."""


def _guarded(check: Callable[[], None]) -> Callable[[], None]:
    def guarded() -> None:
        try:
            check()
        except Exception as exc:
            raise _CheckpointRaised(exc) from exc

    return guarded


def _page(
    page: pypdf.PageObject,
    found: PdfFindings,
    images: MediaBudget,
    check: Callable[[], None],
    *,
    media: bool,
) -> None:
    """Links of a page; with ``media``, its text and pictures too."""
    try:
        _page_links(page, found, images, check)
    except Exception as exc:
        # A broken annotation: the rest of the PDF is still read, the file is flagged.
        found.failed(exc)
    for step in (_page_text, _page_images) if media else ():
        try:
            step(page, found, images, check)
        except Exception:
            # Text and pictures are extras (weak lures, QR codes) that honest PDFs also fail
            # to yield (odd fonts, exotic image filters): no evidence.
            continue


def _page_links(
    page: pypdf.PageObject, found: PdfFindings, images: MediaBudget, check: Callable[[], None]
) -> None:
    annotations = page.get("/Annots")
    if annotations is None:
        return
    annotations = annotations.get_object()
    if not isinstance(annotations, ArrayObject):
        return
    for annotation in annotations:
        if len(found.links) >= MAX_PDF_ANNOTATIONS:
            return
        check()
        annotation = annotation.get_object()
        if not isinstance(annotation, DictionaryObject):
            continue
        actions = [annotation.get("/A")]
        extra = annotation.get("/AA")
        if extra is not None and isinstance(extra.get_object(), DictionaryObject):
            actions.extend(extra.get_object().values())
        for action in actions:
            found.links.extend(_action_links(action))


def _document_actions(reader: pypdf.PdfReader, found: PdfFindings) -> None:
    """The action run when the document opens (/OpenAction: a URI there opens by itself)."""
    try:
        action = reader.root_object.get("/OpenAction")
        if action is not None and isinstance(action.get_object(), DictionaryObject):
            found.links.extend(_action_links(action))
    except Exception as exc:
        found.failed(exc)


def _action_links(action: Any) -> list[Link]:
    """Links of an action and the actions chained after it (/Next)."""
    out: list[Link] = []
    for _ in range(MAX_ACTION_CHAIN):
        if action is None:
            break
        action = action.get_object()
        if not isinstance(action, DictionaryObject):
            break
        kind = action.get("/S")
        if kind == "/URI":
            out.append(Link(_text(action.get("/URI")), "pdf", attachment=True))
        elif kind == "/SubmitForm":
            out.append(Link(_file_spec(action.get("/F")), "form", attachment=True))
        elif kind in ("/Launch", "/GoToR", "/GoToE"):
            # A file to open or another document to go to: a URL here opens in the browser.
            target = _file_spec(action.get("/F"))
            out.extend(Link(link.url, "pdf", attachment=True) for link in text_links(target))
        elif kind == "/JavaScript":
            script = _text(action.get("/JS"))[:MAX_PDF_SCRIPT_CHARS]
            out.extend(
                Link(link.url, "pdf", obfuscated=link.obfuscated, attachment=True)
                for link in text_links(script)
            )
        action = action.get("/Next")
        if isinstance(action, ArrayObject):
            action = action[0] if action else None
    return [link for link in out if link.url]


def _file_spec(spec: Any) -> str:
    """A file specification's URL: a string, or a dictionary with /F or /UF (12.7.5.2)."""
    if spec is None:
        return ""
    spec = spec.get_object()
    if isinstance(spec, DictionaryObject):
        return _text(spec.get("/UF") or spec.get("/F"))
    return _text(spec)


def _text(value: Any) -> str:
    """A PDF string (or stream, for /JS) as text; "" for anything else."""
    if value is None:
        return ""
    value = value.get_object()
    if isinstance(value, StreamObject):
        return value.get_data()[:MAX_PDF_SCRIPT_CHARS].decode("latin-1")
    if isinstance(value, bytes):
        return value.decode("latin-1").strip()
    return str(value).strip()


def _page_text(
    page: pypdf.PageObject, found: PdfFindings, images: MediaBudget, check: Callable[[], None]
) -> None:
    room = MAX_PDF_TEXT_CHARS - sum(len(chunk) for chunk in found.text)
    if room <= 0 or _content_bytes(page) > MAX_PDF_CONTENT_BYTES:
        return
    contents = page.get_contents()
    size = len(contents.get_data()) if contents is not None else 0
    if size > MAX_PDF_CONTENT_BYTES or found.content_read + size > MAX_PDF_CONTENT_TOTAL:
        return
    found.content_read += size
    check()
    text = (page.extract_text() or "")[:room]
    if text.strip():
        found.text.append(text)
        found.links.extend(
            Link(link.url, "text", obfuscated=link.obfuscated, attachment=True)
            for link in text_links(text)
        )


def _content_bytes(page: pypdf.PageObject) -> int:
    """Encoded bytes of a page's content streams: a cheap first test before inflating them."""
    contents = page.get("/Contents")
    if contents is None:
        return 0
    contents = contents.get_object()
    streams = contents if isinstance(contents, ArrayObject) else [contents]
    total = 0
    for stream in streams:
        stream = stream.get_object()
        if isinstance(stream, StreamObject):
            total += len(stream._data)
    return total


def _page_images(
    page: pypdf.PageObject, found: PdfFindings, images: MediaBudget, check: Callable[[], None]
) -> None:
    resources = page.get("/Resources")
    resources = resources.get_object() if resources is not None else None
    if not isinstance(resources, DictionaryObject):
        return
    xobjects = resources.get("/XObject")
    xobjects = xobjects.get_object() if xobjects is not None else None
    if not isinstance(xobjects, DictionaryObject):
        return
    for name, ref in xobjects.items():
        check()
        xobject = ref.get_object()
        if not isinstance(xobject, StreamObject) or xobject.get("/Subtype") != "/Image":
            continue
        found.qr_urls.extend(_xobject_qr(page, str(name), xobject, images))


def _xobject_qr(
    page: pypdf.PageObject, name: str, xobject: StreamObject, images: MediaBudget
) -> list[str]:
    encoded: bytes = xobject._data
    if xobject.get("/Filter") == "/DCTDecode":
        # The stream is a JPEG file: Pillow reads it with the mail-image limits (draft scale).
        return decode_qr_urls(encoded, images)
    width, height = int(xobject.get("/Width", 0)), int(xobject.get("/Height", 0))
    if not admit(width, height, len(encoded), images, cap=MAX_PDF_IMAGE_PIXELS):
        return []
    if not images.take(encoded, width * height):
        return []
    picture = page.images[name].image
    return [] if picture is None else decode_qr_image(picture)
