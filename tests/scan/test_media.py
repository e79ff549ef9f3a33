"""The glue between the QR and PDF readers and the rules: decoded texts become ``qr`` links
and ``link-in-qr`` signals, data: URI pictures are decoded, the budget reports itself.
Decoding itself, and the same cases through the scanner, are in test_qr.py and test_pdf.py."""

from __future__ import annotations

import base64

from popproxy.scan.media import budget_signals, data_uri_images, is_pdf, scan_media
from popproxy.scan.qr import MediaBudget
from tests.scan.media_helpers import photo, qr_image

QR_URL = "http://198.51.100.13/d"


def _nothing() -> None:
    return None


def test_is_pdf_looks_in_the_first_kib() -> None:
    assert is_pdf(b"%PDF-1.7\n")
    assert is_pdf(b"junk" * 200 + b"%PDF-1.4")  # readers accept junk in front (annex H.3)
    assert not is_pdf(b"x" * 1024 + b"%PDF-1.4")


def test_an_attached_qr_code_is_an_attachment_link_and_a_signal() -> None:
    found = scan_media(qr_image(QR_URL), "code.png", inline=False, budget=MediaBudget(),
                       check=_nothing)
    assert found is not None
    assert [(link.url, link.source, link.attachment) for link in found.links] == [
        (QR_URL, "qr", True)]
    assert [(s.name, s.detail) for s in found.signals] == [("link-in-qr", "198.51.100.13")]


def test_a_picture_without_a_code_finds_nothing_and_text_is_no_media() -> None:
    found = scan_media(photo(64, 64), "p.png", inline=True, budget=MediaBudget(), check=_nothing)
    assert found is not None and (found.links, found.signals) == ([], [])
    assert scan_media(b"plain text", "a.txt", inline=True, budget=MediaBudget(),
                      check=_nothing) is None


def test_data_uri_pictures_are_decoded_inline() -> None:
    encoded = base64.b64encode(qr_image(QR_URL)).decode("ascii")
    src = "data:image/png;base64," + encoded[:40] + "\n" + encoded[40:]  # folded, as in mail
    found = data_uri_images([src, "data:image/png,notbase64", "https://x.test/a.png"],
                            MediaBudget(), _nothing)
    assert [(link.url, link.attachment) for link in found.links] == [(QR_URL, False)]


def test_budget_signals() -> None:
    assert budget_signals(MediaBudget()) == []
    budget = MediaBudget()
    budget.bombs, budget.grids_cut, budget.grid_cells, budget.skipped = 1, True, 9000, 4
    assert [(s.name, s.detail) for s in budget_signals(budget)] == [
        ("limit-image", "1 images declare more pixels than they hold"),
        ("limit-html", "9000 table cells looked at for codes"),
        ("qr-skipped", "4 images not decoded"),
    ]
