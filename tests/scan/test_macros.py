"""Office macro detection through olevba: junk and lookalikes are no macros, and it never
raises (moved from test_attachments.py, where the signal is tested through the scanner)."""

from __future__ import annotations

from popproxy.scan.limits import MAX_OFFICE_BYTES
from popproxy.scan.macros import has_vba_macros
from tests.scan.test_attachments import _zip


def test_olevba_on_junk_is_false() -> None:
    assert has_vba_macros("x.doc", b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\x00" * 100) is False
    assert has_vba_macros("x.docm", _zip({"word/vbaProject.bin": b"junk"})) is False


def test_documents_over_the_office_cap_are_not_parsed() -> None:
    # olevba's cost grows with the document size (limits.MAX_OFFICE_BYTES).
    ole = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
    assert has_vba_macros("big.doc", ole + b"\x00" * MAX_OFFICE_BYTES) is False


def test_olevba_reads_anything_else_as_vba_source() -> None:
    # The quirk that makes callers ask only about OLE or zip data (attachments.py checks the
    # magic bytes first): olevba takes other input, even none at all, for VBA source text.
    assert has_vba_macros("notes.txt", b"Sub AutoOpen()\r\nEnd Sub\r\n") is True
    assert has_vba_macros("empty.doc", b"") is True
