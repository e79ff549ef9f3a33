"""Outlook .msg attachments (issue 15): the forwarded mail inside is walked like an attached
message (body links judged, attachment names and contents judged), within hard limits, and a
limit reached is a signal, never a cleaner message."""

from __future__ import annotations

import io
import time
import zipfile

import pytest

from popproxy.scan import outlook
from popproxy.scan.outlook import MAX_MSG_ATTACHMENTS, MAX_MSG_BYTES, MAX_MSG_STREAM_BYTES
from popproxy.scan.zips import MAX_NESTING
from tests.scan.helpers import build, names, scan
from tests.scan.media_helpers import qr_image
from tests.scan.ole_helpers import compound_file

_BAD = "https://paypa1.example/login"  # a look-alike host: link-brand-lookalike when judged
_LOOKALIKE = "link-brand-lookalike"
_MSG_TYPE = "application/vnd.ms-outlook"
_ATTACH = "__attach_version1.0_#{:08X}/__substg1.0_{}"


def _unicode(text: str) -> bytes:
    return text.encode("utf-16-le") + b"\0\0"


def _msg(
    *, subject: str = "Fwd: invoice", body: str | None = None, html: str | None = None,
    attachments: tuple[tuple[str, bytes], ...] = (), short_names: bool = False,
) -> bytes:
    """A .msg file: properties as [MS-OXMSG] stores them, in a compound file."""
    streams = {"__substg1.0_0037001F": _unicode(subject)}
    if body is not None:
        streams["__substg1.0_1000001E"] = body.encode("cp1252")  # the 8-bit string form
    if html is not None:
        streams["__substg1.0_10130102"] = html.encode("utf-8")
    for n, (name, data) in enumerate(attachments):
        tag = "3704001F" if short_names else "3707001F"
        streams[_ATTACH.format(n, tag)] = _unicode(name)
        streams[_ATTACH.format(n, "37010102")] = data
    return compound_file(streams)


def _with(name: str, data: bytes, mime: str = _MSG_TYPE) -> set[str]:
    start = time.monotonic()
    got = names(scan(build(text="see attached", attachments=((name, data, mime),))))
    assert time.monotonic() - start < 5.0
    return got


def _zip(name: str, data: bytes) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr(name, data)
    return out.getvalue()


def test_html_body_link_is_judged() -> None:
    html = f'<p>Your mailbox is full.</p><a href="{_BAD}">Keep my mail</a>'
    assert _LOOKALIKE in _with("Fwd.msg", _msg(html=html))


def test_plain_body_link_is_judged() -> None:
    assert _LOOKALIKE in _with("Fwd.msg", _msg(body=f"Sign in at {_BAD} today"))


@pytest.mark.parametrize(
    ("name", "mime"), [("scan.dat", "application/octet-stream"), ("", "application/pdf")]
)
def test_msg_under_a_lying_name_or_type_is_found_by_its_streams(name: str, mime: str) -> None:
    assert _LOOKALIKE in _with(name, _msg(body=f"visit {_BAD}"), mime)


@pytest.mark.parametrize(
    ("attachment", "signal"),
    [("invoice.pdf.exe", "attach-double-ext"), ("update.js", "attach-risky-ext"),
     ("invoice\u202efdp.exe", "attach-bidi-name")],
)
def test_attachment_names_count_as_for_mime_attachments(attachment: str, signal: str) -> None:
    assert signal in _with("Fwd.msg", _msg(body="see attached", attachments=((attachment, b"x"),)))


def test_short_file_name_is_used_without_a_long_one() -> None:
    data = _msg(body="see attached", attachments=(("INVOIC~1.EXE", b"x"),), short_names=True)
    assert "attach-risky-ext" in _with("Fwd.msg", data)


def test_attachment_contents_are_judged() -> None:
    page = f'<a href="{_BAD}">Open</a>'.encode()
    code = qr_image("http://198.51.100.7/login")
    got = _with("Fwd.msg", _msg(attachments=(("page.html", page), ("code.png", code))))
    assert {_LOOKALIKE, "link-in-qr", "link-ip-host"} <= got


def test_msg_in_a_zip_is_judged() -> None:
    data = _zip("Fwd.msg", _msg(body=f"visit {_BAD}"))
    assert _LOOKALIKE in _with("files.zip", data, "application/zip")


def test_honest_msg_raises_nothing() -> None:
    assert not _with("Minutes.msg", _msg(subject="Minutes", body="Notes from Tuesday's meeting."))


def test_msg_nested_past_the_limit_is_a_limit() -> None:
    data = _msg(body=f"visit {_BAD}")
    for depth in range(MAX_NESTING):
        data = _zip(f"level{depth}.{'msg' if depth == 0 else 'zip'}", data)
    assert "limit-container" in _with("files.zip", data, "application/zip")


def test_too_many_attachments_are_a_limit_not_cleaner() -> None:
    extra = ((f"photo{i}.txt", b"hello") for i in range(MAX_MSG_ATTACHMENTS))
    attachments = (("run.exe", b"x"), *extra)
    got = _with("Fwd.msg", _msg(attachments=attachments))
    assert {"limit-container", "attach-risky-ext"} <= got


def test_attachment_over_the_stream_limit_keeps_its_name_and_is_a_limit() -> None:
    big = b"MZ" + b"\0" * MAX_MSG_STREAM_BYTES
    got = _with("Fwd.msg", _msg(body=f"visit {_BAD}", attachments=(("tool.exe", big),)))
    assert {"limit-container", "attach-risky-ext", _LOOKALIKE} <= got


def test_file_over_the_byte_limit_is_not_opened_and_is_a_limit() -> None:
    found = outlook.read_msg(b"\xd0\xcf\x11\xe0" + b"\0" * MAX_MSG_BYTES, 1 << 30, lambda: None)
    assert found is not None
    assert found.limited


def test_byte_budget_passed_in_is_kept() -> None:
    data = _msg(body="x" * 5000, html="<p>" + "y" * 5000 + "</p>")
    found = outlook.read_msg(data, 6000, lambda: None)
    assert found is not None
    assert found.limited
    assert found.bytes_read <= 6000


def test_broken_compound_file_is_not_an_error() -> None:
    data = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\xff" * 4000
    verdict = scan(build(attachments=(("x.msg", data, _MSG_TYPE),)))
    assert verdict.action != "unscanned"
