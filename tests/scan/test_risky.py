"""Risky attachments for scan.risky_attachments (issue 19 item 11): the scanner's facts, an
opaque .bin only by its content, and the notes that replace them."""

from __future__ import annotations

import io
import zipfile

import pytest

from popproxy.scan.risky import has_risky_attachment, removal_note, risky_attachment
from tests.scan.helpers import build

PE = b"MZ" + b"\x90" * 62 + b"This program cannot be run in DOS mode"
ISO = b"\x00" * 0x8001 + b"CD001" + b"\x00" * 100


def _zip(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


ODT_MACROS = _zip({"mimetype": b"application/vnd.oasis.opendocument.text",
                   "META-INF/manifest.xml": b"<manifest/>",
                   "Basic/Standard/Module1.xml": b"<module/>"})


@pytest.mark.parametrize(("names", "data", "why"), [
    (["report.pdf"], PE, "program (windows-pe)"),
    (["data.bin"], PE, "program (windows-pe)"),  # .bin: risky by its content
    ([], ISO, "disk image (ISO 9660)"),
    (["invoice.js"], b"var x = 1;", "file type .js"),
    (["setup.ISO"], b"not really", "file type .iso"),
    (["notes.odt"], ODT_MACROS, "document with macros"),
    (["photos.zip"], _zip({"a/run.exe": b"x"}), "archive holding a program"),
])
def test_risky(names: list[str], data: bytes, why: str) -> None:
    assert risky_attachment(names, data) == why


@pytest.mark.parametrize(("names", "data"), [
    (["data.bin"], b"\x00\x01opaque bytes"),  # an opaque .bin is not risky by itself
    ([], b"\x00\x01opaque bytes"),
    (["report.pdf"], b"%PDF-1.7\n"),
    (["photos.zip"], _zip({"a.jpg": b"\xff\xd8"})),
    (["MZ.txt"], b"MZ short"),  # "MZ" alone is two letters, not a program
])
def test_not_risky(names: list[str], data: bytes) -> None:
    assert risky_attachment(names, data) is None


def test_notes_say_what_was_removed() -> None:
    assert removal_note(["run.exe"], PE, "keep") is None
    assert removal_note(["a.pdf"], b"%PDF-", "strip") is None
    strip = removal_note(["www.paypal.com.exe"], PE, "strip")  # a name that reads as a link
    assert strip is not None and strip.disposition == "inline"
    assert strip.content_type == 'text/plain; charset="utf-8"'
    assert strip.text == (b"popproxy removed the attachment www[.]paypal[.]com[.]exe (102 bytes): "
                          b"program (windows-pe).\nAsk your mail administrator if you need it.\n")
    replace = removal_note(["run.exe"], PE, "replace")
    assert replace is not None and replace.text.startswith(b"popproxy removed the attachment")
    assert replace.disposition == 'attachment; filename="run.exe.removed.txt"'
    assert replace.content_type.endswith('name="run.exe.removed.txt"')


def test_has_risky_attachment_walks_the_message() -> None:
    assert has_risky_attachment(build(text="hi", attachments=(("x.exe", PE, "application/x"),)))
    assert not has_risky_attachment(build(text="hi",
                                          attachments=(("d.bin", b"\x00\x01", "application/x"),)))
