"""The scanner's limits keep the relations their reasons state (each limit's enforcement is
tested with the code that applies it, e.g. test_limit_bypass.py)."""

from __future__ import annotations

from popproxy.scan import limits


def test_decoding_room_covers_a_message_at_the_size_cap() -> None:
    # base64 shrinks by 3/4: a message under the cap decodes to less than the decoded cap.
    assert limits.MAX_DECODED_BYTES >= limits.MAX_MESSAGE_BYTES * 3 // 4


def test_links_are_searched_beyond_the_size_cap() -> None:
    # Only text counted twice can run out the link search, never one message's own text.
    assert limits.MAX_LINK_SCAN_CHARS > limits.MAX_MESSAGE_BYTES
    assert limits.MAX_TEXT_CHARS < limits.MAX_LINK_SCAN_CHARS


def test_link_budgets_nest() -> None:
    assert limits.MAX_JUDGED_LINKS == 5 * limits.MAX_LINKS
    assert limits.MAX_LINKS < limits.MAX_LINK_CANDIDATES
    assert limits.TEXT_LINK_CHUNK < limits.MAX_LINK_SCAN_CHARS


def test_overflow_walk_visits_a_bounded_number_of_parts() -> None:
    assert limits.MAX_OVERFLOW_BYTES // limits.OVERFLOW_PART_COST == 8192
    assert limits.MAX_MIME_PARTS < limits.MAX_PARSE_DELIMITERS


def test_header_bounds_follow_rfc_5322() -> None:
    # RFC 5322 section 2.1.1: 998 characters a line; a reason's detail fits many times over.
    assert limits.MAX_DETAIL_CHARS * 2 < 998
    assert limits.MAX_HEADER_DECODE_CHARS >= 998
    assert 0 < limits.MAX_HEADER_REASONS <= 10
