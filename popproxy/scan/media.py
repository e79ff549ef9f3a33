"""Signals and links of images (QR codes) and PDFs, for the attachment scan and the scanner.

Glue between :mod:`.qr`/:mod:`.pdf` and the rest: decoded QR texts become :class:`Link` objects
for the message's link pool (so every link rule judges them), and the per-message
:class:`MediaBudget` becomes signals at the end of a scan.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from dataclasses import dataclass, field

from popproxy.scan.extract import Link, text_links
from popproxy.scan.html_qr import ModuleGrid
from popproxy.scan.pdf import read_pdf
from popproxy.scan.qr import (
    MAX_QR_IMAGE_BYTES,
    MediaBudget,
    decode_module_grid,
    decode_qr_urls,
    is_image,
)
from popproxy.scan.urls import parse_url
from popproxy.scan.verdict import Signal, clean_detail
from popproxy.scan.weights import weight

# Characters of a data: URI image decoded: what MAX_QR_IMAGE_BYTES encodes to in base64, with
# room for the "data:image/png;base64," head and line breaks.
_MAX_DATA_URI_CHARS = MAX_QR_IMAGE_BYTES * 3 // 2

# Readers accept "%PDF-" anywhere in a file's first 1024 bytes (Acrobat does; PDF 32000-1 annex
# H.3), so junk in front of it must not hide a PDF from the scan.
_PDF_HEADER_WINDOW = 1024


@dataclass(slots=True)
class MediaFindings:
    """Links, visible text and signals from one image or PDF."""

    links: list[Link] = field(default_factory=list)
    text: list[str] = field(default_factory=list)
    signals: list[Signal] = field(default_factory=list)


def is_pdf(data: bytes) -> bool:
    """A PDF by its header (within the first KiB, where readers look for it)."""
    return b"%PDF-" in data[:_PDF_HEADER_WINDOW]


def scan_media(
    data: bytes, label: str, *, inline: bool, budget: MediaBudget, check: Callable[[], None]
) -> MediaFindings | None:
    """Findings of an image or a PDF; None for anything else."""
    if is_image(data):
        found = MediaFindings()
        _qr_links(decode_qr_urls(data, budget), label, inline, found)
        return found
    if is_pdf(data):
        return _pdf(data, label, budget, check)
    return None


def data_uri_images(
    sources: list[str], budget: MediaBudget, check: Callable[[], None]
) -> MediaFindings:
    """QR codes in ``<img src="data:image/...;base64,...">`` pictures of an HTML body."""
    found = MediaFindings()
    for src in sources:
        check()
        if len(src) > _MAX_DATA_URI_CHARS:
            budget.skipped += 1  # as for an attached image over MAX_QR_IMAGE_BYTES
            continue
        data = _data_uri_bytes(src)
        if data is not None and is_image(data):
            _qr_links(decode_qr_urls(data, budget), "inline image", True, found)
    return found


def drawn_codes(
    grids: list[ModuleGrid], label: str, budget: MediaBudget, check: Callable[[], None],
    *, inline: bool = True,
) -> MediaFindings:
    """QR codes drawn with HTML table cells (:mod:`.html_qr`), decoded like pictures."""
    found = MediaFindings()
    for grid in grids:
        check()
        texts = decode_module_grid(grid.width, grid.height, grid.modules, budget)
        _qr_links(texts, label, inline, found)
    return found


def _data_uri_bytes(src: str) -> bytes | None:
    """The bytes of a base64 data: URI, at most what the QR decoder would accept."""
    head, comma, body = src.partition(",")
    if not comma or not head.lower().rstrip().endswith(";base64"):
        return None
    try:
        return base64.b64decode("".join(body.split()), validate=False)
    except (binascii.Error, ValueError):
        return None


def _pdf(data: bytes, label: str, budget: MediaBudget, check: Callable[[], None]) -> MediaFindings:
    pdf = read_pdf(data, budget, check)
    found = MediaFindings(links=pdf.links, text=pdf.text)
    _qr_links(pdf.qr_urls, label, False, found)
    if pdf.problem:
        name = "limit-pdf" if pdf.problem == "limit" else f"pdf-{pdf.problem}"
        found.signals.append(_sig(name, label))
    return found


def _qr_links(texts: list[str], label: str, inline: bool, found: MediaFindings) -> None:
    """QR texts that are web links: into the link pool, and one ``link-in-qr`` signal."""
    for text in texts:
        for link in text_links(text):
            qr = Link(link.url, "qr", obfuscated=link.obfuscated, attachment=not inline)
            found.links.append(qr)
            info = parse_url(link.url)
            host = info.host if info is not None and info.host else label
            found.signals.append(_sig("link-in-qr", host))


def budget_signals(budget: MediaBudget) -> list[Signal]:
    """What the per-message budget says at the end of a scan."""
    out: list[Signal] = []
    if budget.bombs:
        out.append(_sig("limit-image", f"{budget.bombs} images declare more pixels than they hold"))
    if budget.grids_cut:
        # Tables past the cell budget went unexamined: a code drawn there is not to hide.
        out.append(_sig("limit-html", f"{budget.grid_cells} table cells looked at for codes"))
    if budget.skipped:
        out.append(_sig("qr-skipped", f"{budget.skipped} images not decoded"))
    return out


def _sig(name: str, detail: str) -> Signal:
    return Signal(name=name, weight=weight(name), detail=clean_detail(detail))
