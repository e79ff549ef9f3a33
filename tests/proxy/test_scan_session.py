"""Scanning in a session: fail-open/closed, size cap streaming, quarantine release, metrics."""

from __future__ import annotations

import asyncio
import gc
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from popproxy.proxy.demo_upstream import DemoUpstream, Mailbox
from popproxy.proxy.observe import Observer
from popproxy.proxy.session import Session
from popproxy.proxy.socket_channel import SocketChannel
from popproxy.quarantine import QuarantineStore
from tests.helpers import LoopThread, RunningProxy, make_config, running_demo, running_proxy
from tests.integration.rawpop import RawPOP3

PHISH = (b"From: Security <alert@example.test>\r\nSubject: Verify now\r\n"
         b"Content-Type: text/html\r\n\r\n"
         b'<a href="http://198.51.100.7/login">https://www.paypal.com/</a>\r\n'
         b"<form action=\"http://198.51.100.7/p\"><input type=password></form>\r\n")
CLEAN = b"From: a@example.test\r\nSubject: hello\r\n\r\nJust text.\r\n"
BIG = b"From: a@example.test\r\nSubject: big\r\n\r\n" + b"x" * 70 + b"\r\n" * 1 + (
    (b"y" * 76 + b"\r\n") * 100)


@contextmanager
def _proxy(loop: LoopThread, tmp: Path, scan: dict[str, Any],
           messages: list[bytes], observer: Observer | None = None
           ) -> Iterator[tuple[RunningProxy, DemoUpstream]]:
    demo = DemoUpstream({b"u": Mailbox(b"p", list(messages))})
    with running_demo(loop, demo):
        config = make_config(demo.port, scan={"enabled": True, **scan}, state_dir=str(tmp))
        with running_proxy(config, loop, observer) as proxy:
            yield proxy, demo


def _retr_all(port: int) -> tuple[list[int], list[bytes]]:
    with RawPOP3(port) as c:
        c.login("u", "p")
        listing = c.command("LIST").split(b"\r\n")[1:-2]
        sizes = [int(line.split()[1]) for line in listing]
        bodies = []
        for n in range(1, len(sizes) + 1):
            raw = c.command(f"RETR {n}")
            body = raw.split(b"\r\n", 1)[1][: -len(b".\r\n")].replace(b"\r\n..", b"\r\n.")
            bodies.append(body)
        c.command("QUIT")
    return sizes, bodies


def test_scan_timeout_fail_open_is_suspicious_and_defanged(loop_thread: LoopThread,
                                                            tmp_path: Path) -> None:
    """Issue 14: a message the scanner could not judge in time is not delivered with live
    links behind a bare "unscanned" header: fail-open defangs it (the default)."""
    with _proxy(loop_thread, tmp_path, {"time_budget": 1e-9}, [PHISH]) as (proxy, _):
        sizes, bodies = _retr_all(proxy.port)
    assert bodies[0].startswith(b"X-Popproxy-Verdict: defang")
    assert b"unscanned: over the" in bodies[0]
    assert b'href="http://198.51.100.7' not in bodies[0] and b"hxxp://" in bodies[0]
    assert sizes == [len(bodies[0])]


def test_scan_timeout_fail_open_action_tag(loop_thread: LoopThread, tmp_path: Path) -> None:
    scan = {"time_budget": 1e-9, "fail_open_action": "tag"}
    with _proxy(loop_thread, tmp_path, scan, [PHISH]) as (proxy, _):
        sizes, bodies = _retr_all(proxy.port)
    assert bodies[0].startswith(b"X-Popproxy-Verdict: tag")
    assert b"Subject: [SUSPICIOUS] Verify now" in bodies[0]
    assert sizes == [len(bodies[0])]


def test_time_budget_exceeded_fail_closed_quarantines(loop_thread: LoopThread,
                                                      tmp_path: Path) -> None:
    scan = {"time_budget": 1e-9, "fail_mode": "closed"}
    with _proxy(loop_thread, tmp_path, scan, [CLEAN]) as (proxy, _):
        sizes, bodies = _retr_all(proxy.port)
    assert b"Just text." not in bodies[0]
    assert sizes == [len(bodies[0])]
    assert [h.id for h in QuarantineStore(tmp_path / "quarantine").list()]


def test_message_over_the_cap_is_streamed_tagged(loop_thread: LoopThread,
                                                 tmp_path: Path) -> None:
    """Issue 14: a message just over scan.max_message_bytes is not waved through with only an
    "unscanned" line: it is tagged (Subject prefix, verdict lines) and its body streamed."""
    with _proxy(loop_thread, tmp_path, {"max_message_bytes": 1024}, [BIG, CLEAN]) as (proxy, _):
        sizes, bodies = _retr_all(proxy.port)
    assert bodies[0].startswith(b"X-Popproxy-Verdict: tag; score=")
    assert b"X-Popproxy-Reasons: limit-size (first 1024 bytes judged)" in bodies[0]
    assert b"Subject: [SUSPICIOUS] big\r\n" in bodies[0]
    assert bodies[0].endswith(BIG.split(b"\r\n\r\n", 1)[1])
    assert sizes == [len(bodies[0]), len(CLEAN)]


def test_quarantine_release_delivers_the_original_next_session(loop_thread: LoopThread,
                                                               tmp_path: Path) -> None:
    scan = {"thresholds": {"tag": 0.5, "defang": 0.6, "quarantine": 0.7}}
    with _proxy(loop_thread, tmp_path, scan, [PHISH, CLEAN]) as (proxy, _):
        sizes, bodies = _retr_all(proxy.port)
        assert b"198.51.100.7/login" not in bodies[0]
        (held,) = QuarantineStore(tmp_path / "quarantine").list()
        policy = tmp_path / "policy.yaml"
        policy.write_text(f"listeners: [{{name: a, port: 1995, mode: tls}}]\n"
                          f"state_dir: {tmp_path}\n")
        cli = [sys.executable, "-m", "popproxy", "quarantine", "--config", str(policy)]
        listed = subprocess.run([*cli, "list"], capture_output=True, text=True, check=True)
        assert held.id in listed.stdout and "held" in listed.stdout
        shown = subprocess.run([*cli, "show", held.id], capture_output=True, check=True)
        assert shown.stdout == PHISH
        subprocess.run([*cli, "release", held.id], capture_output=True, check=True)
        sizes, bodies = _retr_all(proxy.port)
        assert bodies[0] == PHISH and sizes[0] == len(PHISH)
    missing = subprocess.run([*cli, "release", "ffff"], capture_output=True, text=True)
    assert missing.returncode == 1


def test_scan_metrics_and_audit(loop_thread: LoopThread, tmp_path: Path) -> None:
    import io
    import json

    from popproxy.auditlog import AuditLog
    from popproxy.metrics import Metrics

    stream = io.StringIO()
    observer = Observer(Metrics(), AuditLog(stream))
    with _proxy(loop_thread, tmp_path, {}, [PHISH, CLEAN], observer) as (proxy, _):
        _retr_all(proxy.port)
    registry = observer.metrics.registry
    assert registry.get_sample_value("popproxy_messages_scanned_total",
                                     {"verdict": "clean", "action": "pass"}) == 1
    flagged = sum(registry.get_sample_value("popproxy_messages_scanned_total",
                                            {"verdict": "flagged", "action": a}) or 0
                  for a in ("tag", "defang", "quarantine"))
    assert flagged == 1
    assert registry.get_sample_value("popproxy_scan_duration_seconds_count") == 2
    verdicts = [json.loads(line) for line in stream.getvalue().splitlines()
                if '"verdict"' in line]
    assert {v["action"] for v in verdicts} >= {"pass"}


def test_large_tagged_message_is_sent_in_slices_and_intact(loop_thread: LoopThread,
                                                           tmp_path: Path) -> None:
    """A rendered (tagged) message bigger than several write slices, with dot lines at slice
    boundaries: every octet arrives, the size matches LIST, and a TOP of it is consistent."""
    from popproxy.proxy.mailbox import RENDERED_WRITE_SLICE

    line = b"." + b"z" * 73 + b"\r\n"  # dot-stuffed on the wire: 77 octets per line
    body = line * (3 * RENDERED_WRITE_SLICE // len(line) + 7)
    phish_big = PHISH.replace(b"\r\n\r\n", b"\r\n\r\n" + body, 1)
    tag_only = {"thresholds": {"tag": 1, "defang": 1000, "quarantine": 2000}}
    with _proxy(loop_thread, tmp_path, tag_only, [phish_big]) as (proxy, _):
        sizes, bodies = _retr_all(proxy.port)
        with RawPOP3(proxy.port) as c:
            c.login("u", "p")
            top = c.command("TOP 1 2")
    assert bodies[0].startswith(b"X-Popproxy-Verdict: tag")
    assert body in bodies[0]
    assert sizes == [len(bodies[0])]
    head = bodies[0].split(b"\r\n\r\n", 1)[0]
    assert top.split(b"\r\n", 1)[1].startswith(head)
    assert top.endswith(b"\r\n..zzz" + b"z" * 70 + b"\r\n.\r\n")


TAG_ONLY = {"thresholds": {"tag": 0, "defang": 1000, "quarantine": 2000}}  # all tagged
PHISH_NO_BODY = PHISH.split(b"\r\n\r\n")[0] + b"\r\nX-Link: http://198.51.100.7/login\r\n"


def test_tagged_retr_is_streamed_and_equals_the_whole_render(
    loop_thread: LoopThread, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """RETR of a tagged message renders only its header and relays the body as it comes; the
    bytes are those of rendering the whole message (forced here with a tiny header limit),
    for a body with dot lines and for a message that is all header."""
    body_with_dots = b".hidden\r\n..two\r\n\r\n.\r\nend\r\n" * 2000
    messages = [PHISH.replace(b"\r\n\r\n", b"\r\n\r\n" + body_with_dots, 1), PHISH_NO_BODY]
    results = []
    for limit in (1024 * 1024, 16):
        monkeypatch.setattr("popproxy.proxy.mailbox.MAX_STREAMED_HEADER", limit)
        with _proxy(loop_thread, tmp_path / str(limit), TAG_ONLY, messages) as (proxy, _):
            results.append(_retr_all(proxy.port))
    (sizes, bodies), (whole_sizes, whole_bodies) = results
    assert bodies == whole_bodies and sizes == whole_sizes
    assert sizes == [len(b) for b in bodies]
    assert all(b.startswith(b"X-Popproxy-Verdict: tag") for b in bodies)
    assert b"\r\n\r\n" + body_with_dots in bodies[0]


def test_oversize_is_audited_unscanned_and_counted_apart_from_failures(
    loop_thread: LoopThread, tmp_path: Path
) -> None:
    """Issue 19 item 12: a message over scan.max_message_bytes writes an ``unscanned`` audit
    event and counts as reason too_large, not as the scanner failure the alert looks at."""
    import io
    import json

    from popproxy.auditlog import AuditLog
    from popproxy.metrics import Metrics

    stream = io.StringIO()
    observer = Observer(Metrics(), AuditLog(stream))
    with _proxy(loop_thread, tmp_path, {"max_message_bytes": 1024}, [BIG, CLEAN],
                observer) as (proxy, _):
        _retr_all(proxy.port)
    events = [json.loads(line) for line in stream.getvalue().splitlines()]
    (unscanned,) = [e for e in events if e["event"] == "unscanned"]
    assert unscanned["message"] == 1 and unscanned["reason"] == "too_large"
    assert unscanned["size"] == len(BIG) and unscanned["cap"] == 1024
    assert unscanned["action"] == "tag"
    sample = observer.metrics.registry.get_sample_value
    assert sample("popproxy_scan_unscanned_total", {"reason": "too_large"}) == 1
    assert sample("popproxy_scan_unscanned_total", {"reason": "time_budget"}) == 0


def test_scanner_over_budget_counts_as_a_failure(loop_thread: LoopThread,
                                                 tmp_path: Path) -> None:
    from popproxy.metrics import Metrics

    observer = Observer(Metrics())
    with _proxy(loop_thread, tmp_path, {"time_budget": 1e-9}, [CLEAN], observer) as (proxy, _):
        _retr_all(proxy.port)
    sample = observer.metrics.registry.get_sample_value
    assert sample("popproxy_scan_unscanned_total", {"reason": "time_budget"}) == 1
    assert sample("popproxy_scan_unscanned_total", {"reason": "too_large"}) == 0


def test_risky_attachment_replaced_at_the_listed_size(loop_thread: LoopThread,
                                                      tmp_path: Path) -> None:
    """Issue 19 item 11 through a session: the defanged copy without the program is exactly
    the size LIST reported."""
    from tests.scan.helpers import build

    program = b"MZ" + b"\x90" * 62 + b"This program cannot be run in DOS mode"
    message = build(text="Invoice attached.",
                    attachments=(("invoice.pdf.exe", program, "application/octet-stream"),))
    scan = {"thresholds": {"tag": 0.5, "defang": 0.6, "quarantine": 1000},
            "risky_attachments": "replace"}
    with _proxy(loop_thread, tmp_path, scan, [message]) as (proxy, _):
        sizes, bodies = _retr_all(proxy.port)
    import email
    import email.policy

    parsed = email.message_from_bytes(bodies[0], policy=email.policy.default)
    (note,) = [p for p in parsed.walk() if p.get_filename() == "invoice.pdf.exe.removed.txt"]
    assert "program (windows-pe)" in note.get_content()
    assert program not in bodies[0] and sizes == [len(bodies[0])]


DEFANG_ALL = {"thresholds": {"tag": 0, "defang": 0, "quarantine": 2000}}


def _spooled(state_dir: Path) -> int:
    return sum(p.stat().st_size for p in (state_dir / "spool").rglob("*") if p.is_file())


def test_renders_past_the_session_spool_budget_are_made_again_at_retr(
    loop_thread: LoopThread, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A session keeps at most KEPT_RENDERS_BUDGET of renders between LIST and RETR: with
    none allowed, the spool is empty after LIST, and every RETR (defanged, tagged, and over
    the size cap: quarantined or header-tagged; twice) still gives the listed size and the
    bytes a session with room gets."""
    messages = [PHISH, PHISH.replace(b"Verify now", b"Verify later"), CLEAN, BIG]
    Retrieved = tuple[list[int], list[bytes]]
    results: list[tuple[int, Retrieved, Retrieved]] = []
    for budget in (32 * 1024 * 1024, 0):
        monkeypatch.setattr("popproxy.proxy.delivery.KEPT_RENDERS_BUDGET", budget)
        for scan in (DEFANG_ALL, TAG_ONLY):
            state_dir = tmp_path / f"{budget}-{len(results)}"
            capped = {**scan, "max_message_bytes": 1024}  # BIG is over it
            with _proxy(loop_thread, state_dir, capped, messages) as (proxy, _):
                with RawPOP3(proxy.port) as c:
                    c.login("u", "p")
                    c.command("LIST")
                    spooled_after_list = _spooled(state_dir)
                    c.command("QUIT")
                results.append((spooled_after_list, _retr_all(proxy.port), _retr_all(proxy.port)))
    with_room, none_kept = results[:2], results[2:]
    for (kept, first, again), (dropped, first_0, again_0) in zip(with_room, none_kept, strict=True):
        assert kept > 0 and dropped == 0
        assert first == again and first_0 == again_0
        assert first[1][:3] == first_0[1][:3]  # BIG's notice names its own scan time
        sizes, bodies = first_0
        assert sizes == [len(b) for b in bodies]
    assert with_room[0][1][1][0].startswith(b"X-Popproxy-Verdict: defang")
    assert b"ask your administrator to release it" in none_kept[0][1][1][3]  # held, notice
    assert with_room[1][1][1][0].startswith(b"X-Popproxy-Verdict: tag")
    assert none_kept[1][1][1][3].startswith(b"X-Popproxy-Verdict: tag")


def test_an_idle_session_holds_no_mailbox_view_and_no_timer_of_its_own(
        loop_thread: LoopThread, tmp_path: Path) -> None:
    """Idle memory (issue 18 item 6): the scan view of the mailbox is made at the first
    command after login, not at login, and the idle read deadline shares the loop's timer."""
    with _proxy(loop_thread, tmp_path, {}, [CLEAN]) as (proxy, _), RawPOP3(proxy.port) as c:
        c.login("u", "p")
        channels = list(proxy.server._channels.values())  # this proxy's one session
        assert len(channels) == 1
        (session,) = [o for o in gc.get_objects()
                      if isinstance(o, Session) and o.client is channels[0]]
        deadline = time.monotonic() + 5
        while not session.client.awaiting_read and time.monotonic() < deadline:
            time.sleep(0.01)
        assert session.mailbox is None
        client = session.client
        assert isinstance(client, SocketChannel)  # the server's client side (issue 18)
        timer = client._read_timer
        assert timer is not None and not isinstance(timer, asyncio.TimerHandle)
        assert client._proxy_seen is None and not client._out  # nothing kept for nothing
        assert c.command("NOOP").startswith(b"+OK")  # relayed: no view made for it
        assert session.mailbox is None
        assert c.command("STAT").startswith(b"+OK 1 ")
        assert session.mailbox is not None


def test_an_ended_session_is_freed_by_reference_counting(loop_thread: LoopThread,
                                                         tmp_path: Path) -> None:
    """CPU per login (issue 18 item 5): the auth handler and the mailbox view call back
    ``Session.audit``.  Unless the session unlinks them when it ends, every session is a
    reference cycle, left with its connections and their TLS state to the cyclic GC (about
    half of the collections' time per login, bench/README.md)."""
    with _proxy(loop_thread, tmp_path, {}, [CLEAN]) as (proxy, _):
        gc.collect()
        gc.disable()  # only reference counting frees anything now
        try:
            with RawPOP3(proxy.port) as c:
                c.login("u", "p")
                assert c.command("STAT").startswith(b"+OK 1 ")
                assert c.command("QUIT").startswith(b"+OK")
            deadline = time.monotonic() + 5
            while _sessions() and time.monotonic() < deadline:
                time.sleep(0.01)
            assert _sessions() == 0
        finally:
            gc.enable()


def _sessions() -> int:
    return sum(1 for o in gc.get_objects() if isinstance(o, Session))
