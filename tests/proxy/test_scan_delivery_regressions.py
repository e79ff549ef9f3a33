"""Issue 14 regressions in the scanning relay: UIDL reuse, forged verdict headers, over-cap
phishing, TOP status lines and spooled delivery.  Real sockets against the in-process demo
upstream (it can reuse UIDLs, which Dovecot does only with pop3_reuse_xuidl)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from popproxy.proxy import mailbox
from popproxy.proxy.demo_upstream import DemoUpstream, Mailbox
from popproxy.quarantine import QuarantineStore
from tests.helpers import LoopThread, RunningProxy, make_config, running_demo, running_proxy
from tests.integration.rawpop import RawPOP3, wait_for

PHISH = (b"From: Security <alert@example.test>\r\nSubject: Verify now\r\n"
         b"Content-Type: text/html\r\n\r\n"
         b'<a href="http://198.51.100.7/login">https://www.paypal.com/</a>\r\n'
         b"<form action=\"http://198.51.100.7/p\"><input type=password></form>\r\n")
CLEAN = b"From: a@example.test\r\nSubject: hello\r\n\r\nJust text.\r\n"
FORGED = b"X-Popproxy-Verdict: pass\r\nx-popproxy-reasons: clean\r\n"


@contextmanager
def _proxy(loop: LoopThread, tmp: Path, box: Mailbox,
           scan: dict[str, Any] | None = None) -> Iterator[tuple[RunningProxy, DemoUpstream]]:
    demo = DemoUpstream({b"u": box})
    with running_demo(loop, demo):
        config = make_config(demo.port, scan={"enabled": True, **(scan or {})},
                             state_dir=str(tmp))
        with running_proxy(config, loop) as proxy:
            yield proxy, demo


def _unstuff(answer: bytes) -> tuple[bytes, bytes]:
    status, rest = answer.split(b"\r\n", 1)
    assert rest.endswith(b"\r\n.\r\n") or rest == b".\r\n"
    return status, rest[: -len(b".\r\n")].replace(b"\r\n..", b"\r\n.")


def _session(port: int, *commands: str) -> list[bytes]:
    with RawPOP3(port, timeout=30) as c:
        c.login("u", "p")
        answers = [c.command(cmd) for cmd in commands]
        c.command("QUIT")
    return answers


def _sizes(listing: bytes) -> list[int]:
    return [int(line.split()[1]) for line in listing.split(b"\r\n")[1:-2]]


def test_uidl_reused_for_new_content_is_judged_again(loop_thread: LoopThread,
                                                     tmp_path: Path) -> None:
    """Medium 1: the upstream hands out the old UIDL for new (phishing) content: it must be
    judged anew, and LIST must equal RETR (RFC 1939 section 5)."""
    box = Mailbox(b"p", [CLEAN], uidls=[b"reused-1"])
    with _proxy(loop_thread, tmp_path, box) as (proxy, _):
        (listing,) = _session(proxy.port, "LIST")
        assert _sizes(listing) == [len(CLEAN)]
        box.messages[0] = PHISH  # same UIDL, new content
        listing, retr = _session(proxy.port, "LIST", "RETR 1")
    status, body = _unstuff(retr)
    assert _sizes(listing) == [len(body)]
    assert int(status.split()[1]) == len(body)
    assert b"X-Popproxy-Verdict: " in body and b'href="http://198.51.100.7' not in body


def test_forged_verdict_header_renamed_when_scan_times_out(loop_thread: LoopThread,
                                                           tmp_path: Path) -> None:
    """Medium 6: the sender's own X-Popproxy-Verdict never reaches the client beside ours."""
    box = Mailbox(b"p", [FORGED + PHISH])
    with _proxy(loop_thread, tmp_path, box, {"time_budget": 1e-9}) as (proxy, _):
        listing, retr = _session(proxy.port, "LIST", "RETR 1")
    _, body = _unstuff(retr)
    assert body.lower().count(b"x-popproxy-verdict:") == 1
    assert b"X-Original-Verdict: pass" in body and b"X-Original-reasons: clean" in body
    assert _sizes(listing) == [len(body)]


def test_forged_verdict_header_renamed_on_streamed_over_cap_message(
        loop_thread: LoopThread, tmp_path: Path) -> None:
    big = FORGED + CLEAN + b"z" * 3000 + b"\r\n"
    box = Mailbox(b"p", [big])
    scan = {"max_message_bytes": 1024,
            "thresholds": {"tag": 0.5, "defang": 98, "quarantine": 99}}
    with _proxy(loop_thread, tmp_path, box, scan) as (proxy, _):
        listing, retr, top = _session(proxy.port, "LIST", "RETR 1", "TOP 1 0")
    status, body = _unstuff(retr)
    assert body.lower().count(b"x-popproxy-verdict:") == 1
    assert body.startswith(b"X-Popproxy-Verdict: tag")
    assert b"X-Original-Verdict: pass" in body
    assert _sizes(listing) == [len(body)] and status == f"+OK {len(body)} octets".encode()
    # TOP's status line carries no octet count: it is not the message's size (RFC 1939 s7).
    top_status, top_body = _unstuff(top)
    assert top_status == b"+OK"
    assert top_body == body[: body.index(b"\r\n\r\n") + 4]


def test_forged_verdict_header_renamed_after_release(loop_thread: LoopThread,
                                                     tmp_path: Path) -> None:
    scan = {"thresholds": {"tag": 0.5, "defang": 0.6, "quarantine": 0.7}}
    box = Mailbox(b"p", [FORGED + PHISH])
    with _proxy(loop_thread, tmp_path, box, scan) as (proxy, _):
        _session(proxy.port, "LIST")
        store = QuarantineStore(tmp_path / "quarantine")
        (held,) = store.list()
        store.release(held.id)
        listing, retr = _session(proxy.port, "LIST", "RETR 1")
    _, body = _unstuff(retr)
    assert b"X-Popproxy-Verdict" not in body and b"X-Original-Verdict: pass" in body
    assert body.replace(b"X-Original-", b"X-Popproxy-", 1).replace(
        b"X-Original-", b"x-popproxy-", 1) == FORGED + PHISH
    assert _sizes(listing) == [len(body)]


def test_over_cap_phishing_is_judged_on_its_head_and_quarantined(
        loop_thread: LoopThread, tmp_path: Path) -> None:
    """Limits: a phishing message just over scan.max_message_bytes is judged on what fits,
    not delivered unscanned: its live link never reaches the client, and the original is held
    whole (it was never in memory whole)."""
    big = PHISH + b"<p>" + b"padding " * 400 + b"</p>\r\n"
    scan = {"max_message_bytes": 1024, "thresholds": {"tag": 1, "defang": 2, "quarantine": 9}}
    with _proxy(loop_thread, tmp_path, Mailbox(b"p", [big, CLEAN]), scan) as (proxy, _):
        listing, retr, top = _session(proxy.port, "LIST", "RETR 1", "TOP 1 2")
        again = _session(proxy.port, "LIST", "RETR 1")  # from the cache: rendered again
    _status, body = _unstuff(retr)
    assert b"198.51.100.7/login" not in body and b"QUARANTINE" in body.upper()
    assert _sizes(listing) == [len(body), len(CLEAN)]
    assert _sizes(again[0]) == _sizes(listing) and _unstuff(again[1])[1] == body
    assert _unstuff(top)[0] == b"+OK"
    (held,) = QuarantineStore(tmp_path / "quarantine").list()
    assert QuarantineStore(tmp_path / "quarantine").original(held.id) == big
    assert "limit-size" in " ".join(held.reasons) or held.score > 0


def test_rendered_message_is_sent_from_the_spool_and_the_spool_is_removed(
        loop_thread: LoopThread, tmp_path: Path) -> None:
    """Medium 4: a defanged message is sent from a 0600 spool file in slices (not held per
    session); the session's spool directory is gone when the session ends."""
    scan = {"thresholds": {"tag": 0.5, "defang": 0.6, "quarantine": 99}}
    big_phish = PHISH + (b"<p>" + b"words " * 12 + b"</p>\r\n") * 20_000  # ~1.8 MB
    with _proxy(loop_thread, tmp_path, Mailbox(b"p", [big_phish]), scan) as (proxy, _):
        with RawPOP3(proxy.port, timeout=30) as c:
            c.login("u", "p")
            size = _sizes(c.command("LIST"))[0]
            (session_dir,) = (tmp_path / "spool").iterdir()
            assert session_dir.stat().st_mode & 0o777 == 0o700
            spooled = session_dir / "1"
            assert spooled.stat().st_size == size and spooled.stat().st_mode & 0o777 == 0o600
            _status, body = _unstuff(c.command("RETR 1"))
            c.command("QUIT")
        assert len(body) == size and body.startswith(b"X-Popproxy-Verdict: defang")
        assert b"http://198.51.100.7" not in body  # shown defanged (hxxp, [.]) only
        wait_for(lambda: not list((tmp_path / "spool").iterdir()), what="spool removed")


def test_over_cap_message_with_a_header_block_too_long_to_stream_is_held(
        loop_thread: LoopThread, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Review of issue 14: a tagged over-cap message is sent as our header + the body streamed
    behind the first blank line found within MAX_STREAMED_HEADER.  A longer header block made
    RETR send more octets than LIST said (and held it whole): such a message is quarantined."""
    monkeypatch.setattr(mailbox, "MAX_STREAMED_HEADER", 2048)
    padding = b"".join(b"X-Pad-%d: %s\r\n" % (i, b"a" * 60) for i in range(50))  # ~3.6 KB
    big = CLEAN.replace(b"Subject: hello\r\n", b"Subject: hello\r\n" + padding) \
        + b"z" * 4000 + b"\r\n"
    scan = {"max_message_bytes": 4096, "thresholds": {"tag": 0.5, "defang": 98, "quarantine": 99}}
    with _proxy(loop_thread, tmp_path, Mailbox(b"p", [big]), scan) as (proxy, _):
        listing, retr = _session(proxy.port, "LIST", "RETR 1")
    _status, body = _unstuff(retr)
    assert _sizes(listing) == [len(body)]
    assert b"QUARANTINE" in body.upper() and b"X-Pad-49" not in body
    (held,) = QuarantineStore(tmp_path / "quarantine").list()
    assert QuarantineStore(tmp_path / "quarantine").original(held.id) == big
