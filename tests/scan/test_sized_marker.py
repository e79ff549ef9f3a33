"""The tag's marker at the message's exact size (listing budget): the Subject's first line is
overwritten by the prefix when it has room, cut at whitespace, padded with spaces."""

from __future__ import annotations

import email
import email.policy

import pytest

from popproxy.proxy import scan_jobs
from popproxy.scan.sized_marker import mark_subject

HEAD = b"From: a@example.test\r\nSubject: %s\r\nTo: b@example.test\r\n\r\nbody https://x.test/\r\n"


@pytest.mark.parametrize(("subject", "shown"), [
    (b"Your account needs verification today", b"[SUSPICIOUS] Your account needs"),
    (b"Invoice 2026-12 attached", b"[SUSPICIOUS] Invoice"),
    (b"Exactly twelve", b"[SUSPICIOUS]"),  # room for the prefix only
    # An encoded-word is kept whole or dropped whole, never cut (RFC 2047 section 5).
    (b"Re: =?utf-8?B?w7xiZXJ3ZWlzdW5n?= pending", b"[SUSPICIOUS] Re:"),
])
def test_the_prefix_replaces_the_subject_start_at_the_same_length(subject: bytes,
                                                                   shown: bytes) -> None:
    message = HEAD % subject
    marked = mark_subject(message, "[SUSPICIOUS]")
    assert marked is not None and len(marked) == len(message)
    parsed = email.message_from_bytes(marked, policy=email.policy.default)
    assert str(parsed["Subject"]).rstrip() == shown.decode()
    # Everything but the Subject's value keeps every byte.
    assert marked.split(b"\r\n")[0] == message.split(b"\r\n")[0]
    assert marked.split(b"\r\n")[2:] == message.split(b"\r\n")[2:]


@pytest.mark.parametrize("message", [
    HEAD % b"Hi there",  # shorter than " [SUSPICIOUS]": no room
    b"From: a@example.test\r\n\r\nSubject: in the body\r\n",  # no Subject in the header
])
def test_no_room_or_no_subject_leaves_it_to_the_degraded_form(message: bytes) -> None:
    assert mark_subject(message, "[SUSPICIOUS]") is None
    assert mark_subject(HEAD % b"A long enough subject line", "") is None  # prefix off


def test_a_sized_tag_is_defanged_and_marked_where_there_is_room() -> None:
    order = scan_jobs.RenderOrder("tag", 4.0, ("link-shortener",), 0.0, "")
    roomy = HEAD % b"Quarterly statement available"
    out, held = scan_jobs.render_sized(roomy, order, len(roomy))
    assert not held and len(out) == len(roomy)
    assert b"Subject: [SUSPICIOUS] Quarterly" + b" " * 7 + b"\r\n" in out
    assert b"hxxps://x_test/" in out
    short = HEAD % b"Hi"  # the degraded form: defanged, no marker
    out, held = scan_jobs.render_sized(short, order, len(short))
    assert not held and len(out) == len(short)
    assert b"Subject: Hi\r\n" in out and b"hxxps://x_test/" in out
    # A defang is not a tag: its Subject is left alone.
    defang = scan_jobs.RenderOrder("defang", 9.0, ("x",), 0.0, "")
    assert b"[SUSPICIOUS]" not in scan_jobs.render_sized(roomy, defang, len(roomy))[0]
