"""The worker's jobs as plain functions: forged-header renaming, sized notices, verdict JSON."""

from __future__ import annotations

from pathlib import Path

import pytest

from popproxy.pop3.framing import stuff_body
from popproxy.proxy import scan_jobs
from popproxy.scan import ScanSettings, Signal, Verdict
from popproxy.scan.verdict import Action


@pytest.mark.parametrize("message", [
    b"X-Popproxy-Verdict: pass\r\nSubject: a\r\n\r\nX-Popproxy-Verdict: body\r\n",
    b"x-popproxy-verdict: pass\nSubject: a\n\nbody\n",
    b"X-POPPROXY-Reasons: x\r\n  folded\r\nX-Popproxy-Score: 0\r\n\r\n",
    b"X-Popproxy-Verdict: pass",  # all header, no blank line
])
def test_forged_headers_renamed_in_the_header_block_only_same_length(message: bytes) -> None:
    renamed = scan_jobs.rename_forged_headers(message)
    assert len(renamed) == len(message)
    head = renamed.split(b"\r\n\r\n")[0].split(b"\n\n")[0]
    original_head = message.split(b"\r\n\r\n")[0].split(b"\n\n")[0]
    assert b"x-popproxy-" not in head.lower()
    assert head.count(b"X-Original-") == original_head.lower().count(b"x-popproxy-")
    assert renamed[len(head):] == message[len(head):]  # the body is untouched


@pytest.mark.parametrize("size", [0, 10, 200, 300, 301, 1000, 12345])
def test_sized_notice_has_exactly_the_size(size: int) -> None:
    notice = scan_jobs.sized_notice("abcd", 0.0, size)
    assert len(notice) == size
    if size > 400:
        assert b"Quarantine id: abcd" in notice


def test_verdict_json_round_trip_and_refusals() -> None:
    verdict = Verdict(action="tag", score=4.5, reasons=("link-ip-host (b)",),
                      signals=(Signal(name="link-ip-host", weight=4.5, detail="b"),))
    assert scan_jobs.verdict_from_json(scan_jobs.verdict_to_json(verdict)) == verdict
    for bad in ({"action": "rm -rf", "score": 0, "reasons": [], "signals": []},
                {"action": "pass", "score": 0, "reasons": [], "signals": [], "cause": "x"},
                {"action": "pass"},
                # signal names become metric labels: a worker cannot invent one
                {"action": "tag", "score": 4, "reasons": [], "signals": [["x-1.2.3.4", 4, ""]]}):
        with pytest.raises((KeyError, ValueError, TypeError)):
            scan_jobs.verdict_from_json(bad)


def test_render_order_refuses_an_unknown_action() -> None:
    with pytest.raises(ValueError):
        scan_jobs.RenderOrder.from_json(
            {"action": "deliver", "score": 0, "reasons": [], "scanned_at": 0, "quarantine_id": ""})


@pytest.mark.parametrize("action", ["tag", "defang", "quarantine", "unscanned"])
@pytest.mark.parametrize(
    "original",
    [
        b"From: a@example.test\nSubject: hi\n\nhello http://198.51.100.7/x\n.dot line\n",
        b"From: a@example.test\nSubject: hi\nContent-Type: text/html\n\n<a href=x>x</a>\n",
        b"From: a@example.test\r\nSubject: hi\r\n\r\nno line end at the end",
    ],
    ids=["bare-lf", "bare-lf-html", "crlf-unterminated"],
)
def test_rendered_copy_is_sent_in_exactly_its_size(
        action: Action, original: bytes, tmp_path: Path) -> None:
    """Review of issue 14: a bare-LF original rendered to a copy ending in LF went out 2 octets
    longer than LIST said (the stuffer ends the body with CRLF).  RFC 1939 section 5."""
    order = scan_jobs.RenderOrder(action, 5.0, ("x",), 0.0, "abcd")
    out = tmp_path / "copy"
    size = scan_jobs.render_to_file(ScanSettings(), original, order, out)
    wire = stuff_body(out.read_bytes())
    assert wire.endswith(b"\r\n.\r\n")
    body = wire[: -len(b".\r\n")]  # what the client keeps: dot-stuffing undone
    unstuffed = body.replace(b"\r\n..", b"\r\n.")
    assert len(unstuffed[1:] if unstuffed.startswith(b"..") else unstuffed) == size
    assert b"\n" not in out.read_bytes().replace(b"\r\n", b"")  # no bare LF on the wire


def test_sized_render_holds_a_message_whose_risky_attachment_would_be_removed() -> None:
    """Issue 19 item 11: the size-preserving defang keeps every attachment's bytes, so with
    scan.risky_attachments strip/replace a message with a program gets the padded notice."""
    from tests.scan.helpers import build

    program = b"MZ" + b"\x90" * 62 + b"This program cannot be run in DOS mode"
    message = build(text="hello", attachments=(("run.exe", program, "application/x"),))
    order = scan_jobs.RenderOrder("defang", 9.0, ("attach-executable",), 1.0, "ab12")
    kept, held = scan_jobs.render_sized(message, order, len(message), "keep")
    assert not held and len(kept) == len(message)
    notice, held = scan_jobs.render_sized(message, order, len(message), "replace")
    assert held and len(notice) == len(message) and program not in notice
