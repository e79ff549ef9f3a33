"""Byte-level header edits for the tag action: our own fields dropped and added, the Subject
prefixed once, the body never touched.  The header-line pattern's linear time is checked in
test_regex_budget.py."""

from __future__ import annotations

import pytest

from popproxy.scan.headers import (
    edit_headers,
    field_name,
    fold_list,
    has_own_headers,
    header_fields,
    split_message,
)

BODY = b"body line\r\n\r\nsecond paragraph\r\n"
MESSAGE = b"From: a@example.test\r\nSubject: Invoice\r\nX-Popproxy-Verdict: pass\r\n\r\n" + BODY


@pytest.mark.parametrize(("message", "parts"), [
    (b"A: 1\r\n\r\nbody", (b"A: 1", b"\r\n", b"body")),
    (b"A: 1\n\nbody", (b"A: 1", b"\n", b"body")),
    (b"A: 1\r\n\nbody", (b"A: 1\r", b"\r\n", b"body")),  # mixed endings: CRLF written
    (b"A: 1\r\nB: 2\r\n", (b"A: 1\r\nB: 2", b"\r\n", b"")),  # all header
])
def test_split_message(message: bytes, parts: tuple[bytes, bytes, bytes]) -> None:
    assert split_message(message) == parts


def test_fields_keep_their_folded_lines() -> None:
    head = b"Subject: a\r\n  folded\r\nTo: b\r\n"
    assert header_fields(head) == [b"Subject: a\r\n  folded\r\n", b"To: b\r\n"]
    assert field_name(b"X-Popproxy-Verdict : tag") == b"x-popproxy-verdict"


def test_own_headers_are_found_as_lenient_clients_read_them() -> None:
    assert has_own_headers(MESSAGE)
    assert has_own_headers(b"From: a\r\nnot a header line\r\nx-popproxy-score: 0\r\n\r\n")
    assert not has_own_headers(b"From: a\r\n\r\nX-Popproxy-Verdict: in the body\r\n")


def test_edit_replaces_our_fields_prefixes_subject_and_keeps_the_body() -> None:
    out = edit_headers(MESSAGE, [b"X-Popproxy-Verdict: tag"], subject_prefix=b"[SUSPICIOUS]")
    assert out == (b"X-Popproxy-Verdict: tag\r\nFrom: a@example.test\r\n"
                   b"Subject: [SUSPICIOUS] Invoice\r\n\r\n" + BODY)
    again = edit_headers(out, [b"X-Popproxy-Verdict: tag"], subject_prefix=b"[SUSPICIOUS]")
    assert again == out  # not prefixed twice


def test_a_missing_subject_is_added_before_the_first_non_header_line() -> None:
    message = b"From: a\nbroken line\nTo: b\n\nbody\n"
    out = edit_headers(message, [], subject_prefix=b"[S]")
    assert out == b"From: a\nSubject: [S]\nbroken line\nTo: b\n\nbody\n"


def test_fold_list_puts_one_item_per_line() -> None:
    assert fold_list("X-Popproxy-Reasons", ["a (1)", "b"], b"\r\n") == (
        b"X-Popproxy-Reasons: a (1),\r\n b")
