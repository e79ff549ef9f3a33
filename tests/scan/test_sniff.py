"""Attachments that could render as a page: by name, by declared type, by content."""

from __future__ import annotations

import pytest

from popproxy.scan.sniff import active_markup, as_text, extension, is_link_file, risky_name


@pytest.mark.parametrize(("name", "ext"), [
    ("invoice.HTML", "html"),
    ("invoice.html. ", "html"),  # Windows drops trailing dots and blanks
    ("invoice.pdf\x00", "pdf"),
    ("README", ""),
    ("archive.tar.gz", "gz"),
])
def test_extension_is_what_the_os_opens_it_with(name: str, ext: str) -> None:
    assert extension(name) == ext


def test_risky_names_and_link_files() -> None:
    assert risky_name(["a.pdf", "b.SVG"]) == "svg"
    assert risky_name(["shortcut.url"]) == "url"
    assert risky_name(["a.pdf", "notes.txt"]) is None
    assert is_link_file(["Open me.webloc"]) and not is_link_file(["page.html"])


@pytest.mark.parametrize(("data", "content_type", "names", "why"), [
    (b"anything", "application/octet-stream", ["pay.hta"], "name .hta"),
    (b"anything", "image/svg+xml", [], "type image/svg+xml"),
    (b"\xef\xbb\xbf  <!DOCTYPE html><p>x", "application/octet-stream", [], "content"),
    (b"<?xml version='1.0'?><x xmlns='http://www.w3.org/1999/xhtml'/>", "application/xml", [],
     "content"),
    ("<html><script>".encode("utf-16"), "application/octet-stream", [], "content"),
    (b"<html>", "text/plain", ["notes.txt"], None),  # shown as text
    (b"%PDF-1.7 <html>", "application/pdf", ["doc.pdf"], None),  # a program of its own
    (b"\x00\x01<script>", "application/octet-stream", [], None),  # binary data
    (b"Dear customer, see attached.", "application/octet-stream", [], None),
])
def test_active_markup(data: bytes, content_type: str, names: list[str],
                       why: str | None) -> None:
    assert active_markup(data, content_type, names) == why


def test_utf16_markup_reads_as_text() -> None:
    assert as_text("<html>hi</html>".encode("utf-16-le"), None) == "<html>hi</html>"
    assert as_text("Grüße".encode("latin-1"), "latin-1") == "Grüße"
