"""OpenDocument attachments (issue 15): hyperlinks are judged, loads from the web are a signal,
macros are found, and the XML limits never make a document cleaner."""

from __future__ import annotations

import io
import time
import zipfile

import pytest

from popproxy.scan.odf import MAX_ODF_LINKS, MAX_ODF_PART_BYTES, MAX_ODF_PARTS
from tests.scan.helpers import build, names, scan

_BAD = "https://paypa1.example/login"  # a look-alike host: link-brand-lookalike when judged
_LOOKALIKE = "link-brand-lookalike"
_TEXT_TYPE = "application/vnd.oasis.opendocument.text"
_NS = (
    'xmlns:office="urn:oasis:names:tc:opendocument:xmlns:office:1.0" '
    'xmlns:text="urn:oasis:names:tc:opendocument:xmlns:text:1.0" '
    'xmlns:draw="urn:oasis:names:tc:opendocument:xmlns:drawing:1.0" '
    'xmlns:style="urn:oasis:names:tc:opendocument:xmlns:style:1.0" '
    'xmlns:script="urn:oasis:names:tc:opendocument:xmlns:script:1.0" '
    'xmlns:xlink="http://www.w3.org/1999/xlink"'
)


def _content(body: str) -> bytes:
    return (
        f'<?xml version="1.0" encoding="UTF-8"?><office:document-content {_NS}>'
        f"<office:body><office:text>{body}</office:text></office:body>"
        "</office:document-content>"
    ).encode()


def _styles(body: str) -> bytes:
    return (f'<?xml version="1.0"?><office:document-styles {_NS}>{body}'
            "</office:document-styles>").encode()


def _odf(
    content: bytes, *, styles: bytes | None = None, extra: tuple[tuple[str, bytes], ...] = (),
    mimetype: str = _TEXT_TYPE,
) -> bytes:
    """An OpenDocument package: mimetype first and stored (ODF 1.3 part 2, 3.3), manifest."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("mimetype", mimetype, compress_type=zipfile.ZIP_STORED)
        archive.writestr("META-INF/manifest.xml", b"<manifest:manifest/>")
        archive.writestr("content.xml", content)
        if styles is not None:
            archive.writestr("styles.xml", styles)
        for name, data in extra:
            archive.writestr(name, data)
    return out.getvalue()


def _with(name: str, data: bytes, mime: str = _TEXT_TYPE) -> set[str]:
    start = time.monotonic()
    got = names(scan(build(text="see attached", attachments=((name, data, mime),))))
    assert time.monotonic() - start < 5.0
    return got


def _link(url: str) -> str:
    return f'<text:p><text:a xlink:type="simple" xlink:href="{url}">Open</text:a></text:p>'


def test_hyperlink_is_judged() -> None:
    assert _LOOKALIKE in _with("invoice.odt", _odf(_content(_link(_BAD))))


@pytest.mark.parametrize(
    ("name", "mime"), [("invoice.pdf", "application/pdf"), ("scan", "application/octet-stream")]
)
def test_document_under_a_lying_name_or_type_is_found_by_its_mimetype(
    name: str, mime: str
) -> None:
    assert _LOOKALIKE in _with(name, _odf(_content(_link(_BAD))), mime)


@pytest.mark.parametrize(
    "kind", ["presentation", "spreadsheet", "graphics"]
)
def test_every_document_kind_is_read(kind: str) -> None:
    data = _odf(_content(_link(_BAD)), mimetype=f"application/vnd.oasis.opendocument.{kind}")
    assert _LOOKALIKE in _with("file.bin", data, "application/octet-stream")


def test_drawing_anchor_is_judged() -> None:
    body = f'<draw:a xlink:href="{_BAD}"><draw:frame/></draw:a>'
    assert _LOOKALIKE in _with("slides.odp", _odf(_content(body)))


def test_event_listener_opening_a_url_is_judged() -> None:
    body = (f'<office:event-listeners><script:event-listener script:language="ooo:script" '
            f'script:event-name="dom:click" xlink:href="{_BAD}"/></office:event-listeners>')
    assert _LOOKALIKE in _with("invoice.odt", _odf(_content(body)))


def test_image_loaded_from_the_web_is_a_remote_load() -> None:
    body = '<draw:frame><draw:image xlink:href="https://tracker.test/p.png"/></draw:frame>'
    assert "attach-office-remote-load" in _with("invoice.odt", _odf(_content(body)))


def test_object_loaded_from_a_share_is_a_remote_load() -> None:
    body = r'<draw:frame><draw:object xlink:href="\\198.51.100.4\share\x"/></draw:frame>'
    assert "attach-office-remote-load" in _with("invoice.odt", _odf(_content(body)))


def test_background_image_in_styles_is_a_remote_load() -> None:
    styles = _styles('<style:background-image xlink:href="http://tracker.test/bg.png"/>')
    data = _odf(_content("<text:p>hi</text:p>"), styles=styles)
    assert "attach-office-remote-load" in _with("invoice.odt", data)


def test_honest_document_raises_nothing() -> None:
    body = (
        '<text:p><text:a xlink:href="#Chapter1">see chapter 1</text:a></text:p>'
        '<draw:frame><draw:image xlink:href="Pictures/1000000.png"/></draw:frame>'
    )
    data = _odf(_content(body), extra=(("Pictures/1000000.png", b"\x89PNG"),))
    assert not _with("report.odt", data)


def test_document_in_a_zip_is_judged() -> None:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr("docs/invoice.ods", _odf(_content(_link(_BAD))))
    assert _LOOKALIKE in _with("files.zip", out.getvalue(), "application/zip")


@pytest.mark.parametrize(
    "member", ["Basic/Standard/Module1.xml", "Scripts/python/run.py"]
)
def test_macros_are_attach_macro(member: str) -> None:
    extra = (("Basic/script-lc.xml", b"<x/>"), (member, b"<x/>"))
    assert "attach-macro" in _with("invoice.odt", _odf(_content("<text:p/>"), extra=extra))


def test_macro_library_index_alone_is_no_macro() -> None:
    extra = (("Basic/script-lc.xml", b"<x/>"), ("Basic/Standard/script-lb.xml", b"<x/>"))
    assert "attach-macro" not in _with("report.odt", _odf(_content("<text:p/>"), extra=extra))


def test_entity_expansion_is_refused_quickly() -> None:
    laughs = (
        '<?xml version="1.0"?><!DOCTYPE r [<!ENTITY a "aaaaaaaaaa">'
        + "".join(f'<!ENTITY a{i} "{"&a;" * 10 if i == 0 else f"&a{i - 1};" * 10}">'
                  for i in range(9))
        + f']><office:document-content {_NS}><text:a xlink:href="&a8;"/>'
        "</office:document-content>"
    )
    got = _with("invoice.odt", _odf(laughs.encode()))
    assert "attach-office-remote-load" not in got


def test_too_many_links_are_a_limit_not_cleaner() -> None:
    body = _link(_BAD) + _link("https://example.org/") * MAX_ODF_LINKS
    got = _with("links.odt", _odf(_content(body)))
    assert {"limit-container", _LOOKALIKE} <= got


def test_content_past_the_byte_limit_is_a_limit_not_cleaner() -> None:
    padding = "<text:p>" + "x" * MAX_ODF_PART_BYTES + "</text:p>"
    got = _with("big.odt", _odf(_content(_link(_BAD) + padding)))
    assert {"limit-container", _LOOKALIKE} <= got


def test_other_zip_with_a_mimetype_member_is_not_read_as_a_document() -> None:
    # An EPUB has a mimetype member too; its XML is searched as text (any zipped .xml is), but
    # its elements are not an office suite's loads.
    body = '<draw:image xlink:href="https://tracker.test/p.png"/>'
    data = _odf(_content(body), mimetype="application/epub+zip")
    assert "attach-office-remote-load" not in _with("book.epub", data, "application/epub+zip")


def test_hyperlink_in_an_embedded_object_is_judged() -> None:
    """A link inside an embedded sub-document (a text frame in a presentation, a chart) was not
    read: only the document's own content and styles were."""
    nested = (("Object 1/content.xml", _content(_link(_BAD))),
              ("Object 2/Object 1/styles.xml", _styles("")))
    assert _LOOKALIKE in _with("slides.odp", _odf(_content(""), extra=nested))


def test_objects_past_the_part_cap_are_a_limit_not_cleaner() -> None:
    objects = tuple((f"Object {n}/content.xml", _content("")) for n in range(MAX_ODF_PARTS + 1))
    got = _with("many.odt", _odf(_content(_link(_BAD)), extra=objects))
    assert {"limit-container", _LOOKALIKE} <= got
