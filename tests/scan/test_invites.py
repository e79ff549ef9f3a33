"""Links of calendar invites: parsed properties a calendar shows, text read when the invite
is too big or broken (the signals they raise are tested in test_containers.py)."""

from __future__ import annotations

import pytest

from popproxy.scan import invites
from popproxy.scan.invites import MAX_CALENDAR_BYTES, calendar_links, is_calendar

_BAD = "https://paypa1.example/login"
_ICS = (
    "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//test//EN\r\nBEGIN:VEVENT\r\n"
    "UID:1@example.org\r\nDTSTAMP:20260101T000000Z\r\nSUMMARY:Review\r\n{prop}\r\n"
    "END:VEVENT\r\nEND:VCALENDAR\r\n"
)


def _links(prop: str, **kwargs: int) -> list[tuple[str, str]]:
    found = calendar_links(_ICS.format(prop=prop).encode(), None, lambda: None, **kwargs)
    return sorted({(link.url, link.source) for link in found.links})


@pytest.mark.parametrize(("data", "calendar"), [
    (b"BEGIN:VCALENDAR\r\n", True),
    (b"\xef\xbb\xbf\r\n  begin:vcalendar\r\n", True),  # BOM, blank lines, any case
    (b"BEGIN:VCARD\r\n", False),
    (b"", False),
])
def test_is_calendar(data: bytes, calendar: bool) -> None:
    assert is_calendar(data) is calendar


def test_a_uri_property_is_an_href_and_text_properties_are_searched() -> None:
    # The whole text is searched too (a client may show what the parser drops): both sources.
    assert _links(f"URL;VALUE=URI:{_BAD}") == [(_BAD, "href"), (_BAD, "text")]
    assert _links(f"DESCRIPTION:Join at {_BAD} today") == [(_BAD, "text")]


def test_folded_lines_are_unfolded_first() -> None:
    # RFC 5545 section 3.1: CRLF and one blank continue the line.
    assert _links("DESCRIPTION:Join at https://paypa1.exa\r\n mple/login") == [(_BAD, "text")]


def test_html_descriptions_give_their_anchors() -> None:
    prop = f'X-ALT-DESC;FMTTYPE=text/html:<a href="{_BAD}">Join</a>'
    assert (_BAD, "href") in _links(prop)


def test_an_invite_over_the_budget_is_read_as_text_only() -> None:
    found = calendar_links(_ICS.format(prop=f"URL:{_BAD}").encode(), None, lambda: None,
                           max_bytes=10)
    assert found.limited
    assert [link.url for link in found.links] == [_BAD]
    assert MAX_CALENDAR_BYTES == 256 * 1024


def test_the_checkpoint_runs_per_component() -> None:
    calls: list[int] = []
    calendar_links(_ICS.format(prop="LOCATION:Room 1").encode(), None, lambda: calls.append(1))
    assert len(calls) == 2  # VCALENDAR and VEVENT


def test_broken_invite_is_still_read_as_text() -> None:
    ics = f"BEGIN:VCALENDAR\r\nBEGIN:VEVENT\r\nURL:{_BAD}\r\n".encode()  # never ended
    found = invites.calendar_links(ics, None, lambda: None)
    assert any("paypa1.example" in link.url for link in found.links)
