"""PDF attachments read with pypdf: link annotations, form actions and visible text, compressed
streams included; hostile PDFs are bounded in time and never come out cleaner."""

from __future__ import annotations

import io
import time

import pypdf
import pytest
from pypdf.annotations import Link as LinkAnnotation

from popproxy.scan.pdf import MAX_PDF_ANNOTATIONS, MAX_PDF_PAGES, raw_uri_links, read_pdf
from popproxy.scan.qr import MediaBudget
from tests.scan.helpers import build, names, scan
from tests.scan.media_helpers import hex_string, link_annotation, one_page_pdf, pdf_file, stream


def _attach(pdf: bytes, name: str = "invoice.pdf") -> bytes:
    text = "Please find the document attached."
    return build(text=text, attachments=((name, pdf, "application/pdf"),))


def _details(pdf: bytes, name: str) -> set[str]:
    return {s.detail for s in scan(_attach(pdf)).signals if s.name == name}


def _uri(url: str) -> bytes:
    return b"[" + link_annotation(b"<< /S /URI /URI " + hex_string(url) + b" >>") + b"]"


def _no_check() -> None:
    pass


def test_link_annotation_hidden_from_a_byte_scan_is_judged() -> None:
    pdf = one_page_pdf(annots=_uri("http://198.51.100.20/login"))
    assert raw_uri_links(pdf) == []  # a hex string: only a PDF parser sees it
    assert _details(pdf, "link-ip-host") == {"198.51.100.20"}


def test_link_annotation_written_by_pypdf_is_judged() -> None:
    writer = pypdf.PdfWriter()
    writer.add_blank_page(612, 792)
    writer.add_annotation(0, LinkAnnotation(rect=(50, 50, 200, 80), url="http://198.51.100.21/x"))
    out = io.BytesIO()
    writer.write(out)
    assert _details(out.getvalue(), "link-ip-host") == {"198.51.100.21"}


def test_submitform_action_is_a_link() -> None:
    action = b"<< /S /SubmitForm /F << /FS /URL /F (http://198.51.100.22/collect) >> >>"
    widget = b"<< /Type /Annot /Subtype /Widget /Rect [0 0 10 10] /FT /Btn /A " + action + b" >>"
    pdf = one_page_pdf(annots=b"[" + widget + b"]")
    found = read_pdf(pdf, MediaBudget(), _no_check)
    assert [(link.url, link.source) for link in found.links] == [
        ("http://198.51.100.22/collect", "form")
    ]
    assert _details(pdf, "link-ip-host") == {"198.51.100.22"}


def test_chained_and_javascript_actions_are_followed() -> None:
    script = b"<< /S /JavaScript /JS (app.launchURL\\(\"http://198.51.100.23/js\"\\);) >>"
    action = b"<< /S /URI /URI (https://example.org/ok) /Next " + script + b" >>"
    pdf = one_page_pdf(annots=b"[" + link_annotation(action) + b"]")
    urls = {link.url for link in read_pdf(pdf, MediaBudget(), _no_check).links}
    assert urls == {"https://example.org/ok", "http://198.51.100.23/js"}


def test_open_action_and_remote_go_to_are_links() -> None:
    go_to = b"<< /S /GoToR /F << /FS /URL /F (http://198.51.100.37/doc.pdf) >> /D [0 /Fit] >>"
    on_open = b"/OpenAction << /S /URI /URI (http://198.51.100.38/) >>"
    pdf = one_page_pdf(annots=b"[" + link_annotation(go_to) + b"]", catalog=on_open)
    found = read_pdf(pdf, MediaBudget(), _no_check)
    assert found.problem == ""
    assert {link.url for link in found.links} == {
        "http://198.51.100.37/doc.pdf",
        "http://198.51.100.38/",
    }


def test_compressed_visible_text_feeds_lures_and_links() -> None:
    pdf = one_page_pdf(text="Verify your account now: http://198.51.100.24/pay")
    assert b"Verify" not in pdf  # the content stream is FlateDecode-compressed
    verdict = scan(_attach(pdf))
    assert {"lure-credentials", "link-ip-host"} <= names(verdict)


def test_text_is_bounded() -> None:
    pdf = one_page_pdf(text="word " * 50_000)
    found = read_pdf(pdf, MediaBudget(), _no_check)
    assert sum(len(chunk) for chunk in found.text) <= 20_000


def test_header_after_junk_is_still_a_pdf() -> None:
    pdf = b"\r\n" + b" " * 300 + one_page_pdf(annots=_uri("http://198.51.100.25/x"))
    assert _details(pdf, "link-ip-host") == {"198.51.100.25"}


def test_corrupt_pdf_keeps_its_raw_links_and_is_flagged() -> None:
    pdf = b"%PDF-1.4\n1 0 obj << /A << /S /URI /URI (http://198.51.100.26/x) >> >>\nendobj\n"
    verdict = scan(_attach(pdf))
    assert {"pdf-unreadable", "link-ip-host"} <= names(verdict)


def test_truncated_pdf_is_not_clean() -> None:
    pdf = one_page_pdf(annots=_uri("http://198.51.100.27/x"))
    verdict = scan(_attach(pdf[: len(pdf) // 3]))
    assert verdict.action != "unscanned"
    assert names(verdict) & {"pdf-unreadable", "link-ip-host"}


def test_encrypted_pdf_is_flagged() -> None:
    writer = pypdf.PdfWriter()
    writer.add_blank_page(612, 792)
    writer.encrypt(user_password="secret", owner_password="owner", algorithm="AES-128")
    out = io.BytesIO()
    writer.write(out)
    assert "pdf-encrypted" in names(scan(_attach(out.getvalue())))


def test_owner_only_protection_is_read() -> None:
    writer = pypdf.PdfWriter()
    writer.add_blank_page(612, 792)
    writer.add_annotation(0, LinkAnnotation(rect=(50, 50, 200, 80), url="http://198.51.100.28/o"))
    writer.encrypt(user_password="", owner_password="owner", algorithm="AES-128")
    out = io.BytesIO()
    writer.write(out)
    verdict = scan(_attach(out.getvalue()))
    assert "pdf-encrypted" not in names(verdict)
    assert "link-ip-host" in names(verdict)


def test_thousands_of_pages_are_bounded() -> None:
    pdf = one_page_pdf(annots=_uri("http://198.51.100.29/x"), pages=4_000)
    started = time.monotonic()
    verdict = scan(_attach(pdf))
    assert time.monotonic() - started < 3.0
    assert "link-ip-host" in names(verdict)
    assert "limit-pdf" not in names(verdict)
    assert MAX_PDF_PAGES < 4_000


def test_page_tree_past_the_limit_is_evidence() -> None:
    pdf = one_page_pdf(annots=_uri("http://198.51.100.36/x"), pages=50_000)
    started = time.monotonic()
    verdict = scan(_attach(pdf))
    assert time.monotonic() - started < 3.0
    assert "limit-pdf" in names(verdict)
    assert verdict.action != "pass"


def test_raw_scan_of_a_link_flood_is_bounded() -> None:
    flood = b"".join(b"/URI (https://h%d.example/)\n" % i for i in range(100_000))
    found = read_pdf(b"%PDF-1.4\n" + flood, MediaBudget(), _no_check)
    assert len(found.links) == MAX_PDF_ANNOTATIONS
    assert found.problem == "limit"


def test_thousands_of_annotations_are_bounded() -> None:
    # 2,000 annotations: read up to MAX_PDF_ANNOTATIONS, the first one judged.
    first = link_annotation(b"<< /S /URI /URI " + hex_string("http://198.51.100.30/x") + b" >>")
    filler = link_annotation(b"<< /S /URI /URI (https://example.org/) >>")
    pdf = one_page_pdf(annots=b"[" + first + filler * 2_000 + b"]")
    started = time.monotonic()
    verdict = scan(_attach(pdf))
    assert time.monotonic() - started < 2.0
    assert "link-ip-host" in names(verdict)
    assert "limit-pdf" not in names(verdict)


def test_annotation_array_past_pypdfs_limit_is_evidence() -> None:
    # 20,000 annotations in one array: pypdf's object parser (~1 MB/s) would take seconds; it
    # stops at the array limit, and the unread links make the message tag, not pass.
    first = link_annotation(b"<< /S /URI /URI " + hex_string("http://198.51.100.34/x") + b" >>")
    filler = link_annotation(b"<< /S /URI /URI (https://example.org/) >>")
    pdf = one_page_pdf(annots=b"[" + first + filler * 20_000 + b"]")
    started = time.monotonic()
    verdict = scan(_attach(pdf))
    assert time.monotonic() - started < 3.0
    assert "limit-pdf" in names(verdict)
    assert verdict.action != "pass"


def test_content_that_inflates_to_megabytes_is_not_text_extracted() -> None:
    # 43 KB of PDF inflating to 15 MB of text operators kept pypdf busy for 10 s.
    content = b"BT /F1 12 Tf 72 720 Td (hello world) Tj ET\n" * 340_000
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 9 9] /Contents 4 0 R /Annots "
        + _uri("http://198.51.100.35/x")
        + b" >>",
        stream(content),
    ]
    started = time.monotonic()
    verdict = scan(_attach(pdf_file(objects)))
    assert time.monotonic() - started < 2.0
    assert "link-ip-host" in names(verdict)


def test_decompression_bomb_content_stream_is_bounded() -> None:
    bomb = stream(b"0 0 m " * 20_000_000)  # 120 MB of drawing operators, ~120 KB compressed
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 9 9] /Contents 4 0 R /Annots "
        + _uri("http://198.51.100.31/x")
        + b" >>",
        bomb,
    ]
    started = time.monotonic()
    verdict = scan(_attach(pdf_file(objects)))
    assert time.monotonic() - started < 3.0
    assert "link-ip-host" in names(verdict)


def test_budget_overrun_is_not_swallowed_as_a_broken_pdf() -> None:
    class Overrun(Exception):
        pass

    def check() -> None:
        raise Overrun

    with pytest.raises(Overrun):
        read_pdf(one_page_pdf(annots=_uri("http://198.51.100.32/x")), MediaBudget(), check)


def test_pdfs_past_the_per_message_cap_get_the_byte_scan() -> None:
    budget = MediaBudget(pdfs=99)
    plain = b"%PDF-1.4\n<< /S /URI /URI (http://198.51.100.33/x) >>\n"
    found = read_pdf(plain, budget, _no_check)
    assert [link.url for link in found.links] == ["http://198.51.100.33/x"]
    assert found.problem == ""


def test_honest_pdf_raises_nothing() -> None:
    writer = pypdf.PdfWriter()
    writer.add_blank_page(612, 792)
    writer.add_annotation(0, LinkAnnotation(rect=(50, 50, 200, 80), url="https://example.org/t"))
    out = io.BytesIO()
    writer.write(out)
    verdict = scan(_attach(out.getvalue()))
    assert verdict.action == "pass"
    assert verdict.signals == ()  # (the trained combiner may still give the shape a score)
