"""Scanning under faults: feed files broken while the proxy runs, the scanner raising or stuck.

Defined outcome (docs/scanning.md, "Budgets and failure"): a broken feed update never stops
mail from being scanned or delivered, and sizes stay consistent (LIST == RETR octets, also when
the feed changes in the middle of a session); a scanner error or a scan over ``time_budget``
gives the *unscanned* verdict, which ``fail_mode: open`` delivers tagged and ``closed``
quarantines.  The session is never cut, no QUIT reaches the upstream, and other users are
served throughout.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from popproxy.proxy import scanning
from popproxy.proxy.demo_upstream import DemoUpstream, Mailbox
from popproxy.quarantine import QuarantineStore
from tests.faults.fault_worker import FAULT_FILE_ENV
from tests.faults.support import Observed
from tests.helpers import LoopThread, RunningProxy, make_config, running_demo, running_proxy
from tests.integration.rawpop import RawPOP3, wait_for

EVIL = "www.evil-feed.test"
FEED_MSG = (b"From: news@example.test\r\nSubject: news\r\n\r\n"
            b"The report is at http://" + EVIL.encode() + b"/report today.\r\n")
PHISH = (b"From: Security <alert@example.test>\r\nSubject: Verify now\r\n"
         b"Content-Type: text/html\r\n\r\n"
         b'<a href="http://198.51.100.7/login">https://www.paypal.com/</a>\r\n'
         b"<form action=\"http://198.51.100.7/p\"><input type=password></form>\r\n")
CLEAN = b"From: a@example.test\r\nSubject: hello\r\n\r\nJust text.\r\n"
MESSAGES = [FEED_MSG, PHISH, CLEAN]
VERDICT_HEADER = b"X-Popproxy-Verdict: "


@contextmanager
def scanning_proxy(loop: LoopThread, tmp: Path, scan: dict[str, Any],
                   observed: Observed) -> Iterator[tuple[RunningProxy, DemoUpstream]]:
    demo = DemoUpstream({b"u": Mailbox(b"p", list(MESSAGES)), b"demo": Mailbox(b"demo")})
    with running_demo(loop, demo):
        config = make_config(demo.port, scan={"enabled": True, **scan}, state_dir=str(tmp))
        with running_proxy(config, loop, observed.observer) as proxy:
            yield proxy, demo


@pytest.fixture
def fault(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[str], None]]:
    """Scan workers from tests/faults/fault_worker.py; ``fault(mode)`` breaks (or, with "",
    repairs) them for the next job.  Scanning happens in worker processes, so breaking the
    scanner means breaking theirs."""
    switch = tmp_path / "fault-mode"
    switch.write_text("")
    monkeypatch.setenv(FAULT_FILE_ENV, str(switch))
    monkeypatch.setattr(scanning, "WORKER_COMMAND",
                        (sys.executable, "-m", "tests.faults.fault_worker"))

    def set_mode(mode: str) -> None:
        switch.write_text(mode)

    yield set_mode


def listing(client: RawPOP3) -> list[int]:
    reply = client.command("LIST")
    assert reply.startswith(b"+OK"), reply
    return [int(line.split()[1]) for line in reply.split(b"\r\n")[1:-2]]


def retr(client: RawPOP3, number: int) -> bytes:
    raw = client.command(f"RETR {number}")
    assert raw.startswith(b"+OK"), raw
    return raw.split(b"\r\n", 1)[1][: -len(b".\r\n")].replace(b"\r\n..", b"\r\n.")


def fetch_all(port: int) -> tuple[list[int], list[bytes]]:
    """One session: LIST, RETR every message, QUIT (nothing is deleted)."""
    with RawPOP3(port) as client:
        client.login("u", "p")
        sizes = listing(client)
        bodies = [retr(client, n) for n in range(1, len(sizes) + 1)]
        assert client.command("QUIT").startswith(b"+OK")
    assert sizes == [len(b) for b in bodies]  # RFC 1939: LIST octets == RETR octets
    return sizes, bodies


def flagged_by_feed(body: bytes) -> bool:
    return body.startswith(VERDICT_HEADER) and b"link-feed-host" in body.split(b"\r\n\r\n")[0]


# --------------------------------------------------------------------------- feed files
def _truncate(path: Path) -> None:
    path.write_bytes(b"")


def _half_written(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # a writer died in the middle of an update


def _corrupt(path: Path) -> None:
    path.write_bytes(bytes(range(256)) * 64 + b"\xff\xfe\x00\r\r\n" * 100)


def _delete(path: Path) -> None:
    path.unlink()


def _directory(path: Path) -> None:
    path.unlink()
    path.mkdir()


FEED_FAULTS = {"truncated": _truncate, "half-written": _half_written, "corrupt": _corrupt,
               "deleted": _delete, "replaced-by-directory": _directory}
# Whether the listed host is still flagged afterwards.  An unreadable feed keeps the hosts last
# loaded (HostFeed.refresh); a readable one *is* the new list, even when empty or half written:
# the proxy cannot tell a broken update from an intended one (feed writers should rename a
# complete file into place).
STILL_LISTED = {"truncated": False, "half-written": False, "corrupt": False, "deleted": True,
                "replaced-by-directory": True}


def _without_date(message: bytes) -> bytes:
    return b"\r\n".join(line for line in message.split(b"\r\n") if not line.startswith(b"Date:"))


@pytest.mark.parametrize("fault", list(FEED_FAULTS))
def test_feed_broken_while_running(loop_thread: LoopThread, tmp_path: Path, fault: str) -> None:
    feed = tmp_path / "feed.txt"
    # The listed host last: a half-written file loses it, like a cut download would.
    feed.write_text("# blocklist\n" + "".join(f"filler{i}.example.org\n" for i in range(50))
                    + EVIL + "\n")
    observed = Observed.new()
    scan = {"feeds": [str(feed)]}
    with scanning_proxy(loop_thread, tmp_path / "state", scan, observed) as (proxy, demo):
        _, before = fetch_all(proxy.port)
        assert flagged_by_feed(before[0])
        assert before[1].startswith(VERDICT_HEADER) or b"quarantine" in before[1].lower()
        assert before[2] == CLEAN

        # Broken in the middle of a session: the sizes it listed stay true (no re-judging
        # within a session), and it is served to the end.
        with RawPOP3(proxy.port) as client:
            client.login("u", "p")
            sizes = listing(client)
            FEED_FAULTS[fault](feed)
            later = time.time() + 5  # a new mtime even on coarse-grained file systems
            if feed.exists():
                os.utime(feed, (later, later))
            assert [len(retr(client, n)) for n in range(1, 4)] == sizes
            assert client.command("QUIT").startswith(b"+OK")

        # The next session is judged under the broken feed: still scanned and consistent.
        _, after = fetch_all(proxy.port)
        assert flagged_by_feed(after[0]) is STILL_LISTED[fault]
        if not STILL_LISTED[fault]:
            assert after[0] == FEED_MSG
        # other signals still work (a quarantine notice made again carries the time of its
        # new verdict: the Date line may tick over between the two sessions)
        assert _without_date(after[1]) == _without_date(before[1])
        assert after[2] == CLEAN
        assert b"QUIT" in demo.commands_seen  # clients' QUITs only ...
        assert observed.events("upstream_error") == []
        # Issue 17: after the change only a message whose action it flips (the feed-listed one,
        # when the new feed no longer lists its host) is downloaded and judged again; the others
        # are re-scored from the evidence cached with their verdicts.
        scanned = observed.total("popproxy_messages_scanned_total")
        assert scanned == (3 if STILL_LISTED[fault] else 4)
        verdict_events = observed.events("verdict", message=1)
        assert len(verdict_events) == (1 if STILL_LISTED[fault] else 2)
        assert ("link-feed-host" in " ".join(verdict_events[-1]["reasons"])) is \
            STILL_LISTED[fault]


def test_feed_reload_does_not_stall_other_sessions(loop_thread: LoopThread,
                                                   tmp_path: Path) -> None:
    """A 100,000-host feed changes; re-reading it (about a second of parsing) must not hold
    up other sessions: a CAPA round trip on another connection stays fast meanwhile."""
    feed = tmp_path / "feed.txt"
    hosts = "".join(f"host{i}.phish{i % 5000}.example.com\n" for i in range(100_000))
    feed.write_text(hosts)
    observed = Observed.new()
    with scanning_proxy(loop_thread, tmp_path / "state", {"feeds": [str(feed)]}, observed) as (
            proxy, _), RawPOP3(proxy.port) as watcher, RawPOP3(proxy.port) as client:
        client.login("u", "p")
        feed.write_text(hosts + EVIL + "\n")
        later = time.time() + 5
        os.utime(feed, (later, later))
        worst = 0.0
        with ThreadPoolExecutor(1) as pool:
            listed = pool.submit(listing, client)  # makes the proxy notice the new feed
            while not listed.done():
                started = time.monotonic()
                assert watcher.command("CAPA").startswith(b"+OK")
                worst = max(worst, time.monotonic() - started)
            listed.result()
        assert worst < 0.25, f"another session waited {worst:.2f} s for a CAPA answer"


# --------------------------------------------------------------------------- scanner faults
def test_scanner_raising_never_costs_a_deletion_or_the_proxy(
    loop_thread: LoopThread, tmp_path: Path, fault: Callable[[str], None]
) -> None:
    """Whatever a scanner exception does to the session, it must not commit deletions, send
    QUIT upstream, or stop the proxy from serving."""
    observed = Observed.new()
    with scanning_proxy(loop_thread, tmp_path, {}, observed) as (proxy, demo):
        fault("raise")
        with RawPOP3(proxy.port) as client:
            client.login("u", "p")
            assert client.command("DELE 3").startswith(b"+OK")
            reply = client.command("LIST")
            assert reply.startswith((b"+OK", b"-ERR [SYS/TEMP] "))
            if reply.startswith(b"-ERR"):
                assert client.read_until_eof() == b""  # and a clean close
        wait_for(lambda: proxy.server.session_count == 0, what="the session to end")
        assert b"QUIT" not in demo.commands_seen
        with RawPOP3(proxy.port) as other:  # still serving, scanner still broken
            other.login("u", "p")
            assert other.command("UIDL").startswith(b"+OK")
            assert other.command("QUIT").startswith(b"+OK")
        fault("")
        sizes, bodies = fetch_all(proxy.port)
        assert len(sizes) == 3 and bodies[2] == CLEAN  # DELE 3 was never committed


def test_scanner_raising_is_suspicious_not_clean(
    loop_thread: LoopThread, tmp_path: Path, fault: Callable[[str], None]
) -> None:
    """Issue 14: a scanner error is no way through.  fail_mode open delivers the message with
    fail_open_action (defang by default): verdict lines, links inert, sizes consistent,
    counted and audited."""
    observed = Observed.new()
    with scanning_proxy(loop_thread, tmp_path, {"fail_mode": "open"}, observed) as (proxy, _):
        fault("raise")
        _, bodies = fetch_all(proxy.port)
    for body in bodies:
        assert body.startswith(b"X-Popproxy-Verdict: defang")
        assert b"unscanned: scanner error" in body.split(b"\r\n\r\n")[0]
    assert b"http://198.51.100.7" not in bodies[1]
    assert observed.sample("popproxy_messages_scanned_total", verdict="unscanned",
                           action="defang") == 3
    assert {e["action"] for e in observed.events("verdict")} == {"defang"}


def test_scanner_stuck_past_the_time_budget_is_killed(
    loop_thread: LoopThread, tmp_path: Path, fault: Callable[[str], None]
) -> None:
    """A scan that never returns is cut off: its worker is killed at the budget + 1 s, LIST is
    answered, the message is delivered suspicious (defanged) with consistent sizes."""
    observed = Observed.new()
    budget = 0.1
    # A session judges its messages one after the other: three times (budget + grace), plus
    # starting a replacement worker each time (about a second on a busy 2-core box).
    limit = 3 * (budget + scanning.KILL_GRACE + 2.0)
    with scanning_proxy(loop_thread, tmp_path, {"time_budget": budget, "workers": 2},
                        observed) as (proxy, _):
        fault("stuck")
        with RawPOP3(proxy.port, timeout=limit + 5) as client:
            client.login("u", "p")
            started = time.monotonic()
            sizes = listing(client)
            assert time.monotonic() - started < limit
            fault("")  # renders work again; the verdicts stay (a timeout is remembered)
            body = retr(client, 2)
            assert body.startswith(b"X-Popproxy-Verdict: defang")
            assert b"http://198.51.100.7" not in body
            assert len(body) == sizes[1]
    assert [e["action"] for e in observed.events("verdict")] == ["defang"] * 3
    assert observed.sample("popproxy_scan_worker_kills_total", reason="timeout") == 3


# --------------------------------------------------------------------------- hostile mail
# Found by tests/fuzz (reproducers in tests/fuzz/test_regressions.py); here the consequence in
# a session.  An attacker only has to send the message.
UNTAGGABLE = b"From: a@example.test\r\nSubject\r\n\r\nLog in at http://0x7f.0.0.1/login\r\n"
PHISH_BROKEN_SUBJECT = PHISH.replace(b"Subject: Verify now", b"Subject: =?utf-8?B?SGVsbG8hI?=")


def _fetch_scanned(loop_thread: LoopThread, tmp_path: Path,
                   messages: list[bytes]) -> tuple[list[int], list[bytes]]:
    """LIST sizes and RETR bodies of ``messages`` through a proxy with scanning on."""
    demo = DemoUpstream({b"u": Mailbox(b"p", messages)})
    with running_demo(loop_thread, demo):
        config = make_config(demo.port, scan={"enabled": True}, state_dir=str(tmp_path))
        with running_proxy(config, loop_thread) as proxy:
            return fetch_all(proxy.port)


def test_message_that_breaks_an_action_is_held_not_delivered_live(
    loop_thread: LoopThread, tmp_path: Path, fault: Callable[[str], None]
) -> None:
    """An action that raises on hostile MIME (the next bug an attacker finds) neither locks
    the mailbox nor hands out the original with its live links: the message is quarantined
    behind our own notice, sizes consistent."""
    fault("action-raises")
    sizes, bodies = _fetch_scanned(loop_thread, tmp_path, [CLEAN, UNTAGGABLE])
    assert bodies[0] == CLEAN and len(sizes) == 2
    assert b"0x7f.0.0.1" not in bodies[1] and b"[QUARANTINED]" in bodies[1]
    assert sizes[1] == len(bodies[1])
    (held,) = QuarantineStore(tmp_path / "quarantine").list()
    assert QuarantineStore(tmp_path / "quarantine").original(held.id) == UNTAGGABLE


def test_subject_line_without_colon_is_still_tagged(loop_thread: LoopThread,
                                                     tmp_path: Path) -> None:
    sizes, bodies = _fetch_scanned(loop_thread, tmp_path, [UNTAGGABLE])
    assert bodies[0].startswith(b"X-Popproxy-Verdict: tag")
    assert b"\r\nSubject: [SUSPICIOUS]" in bodies[0]  # the prefix, on a real Subject field
    assert sizes == [len(bodies[0])]


def test_broken_subject_does_not_smuggle_a_phish_through(loop_thread: LoopThread,
                                                         tmp_path: Path) -> None:
    _, bodies = _fetch_scanned(loop_thread, tmp_path, [PHISH_BROKEN_SUBJECT])
    assert b"198.51.100.7/login" not in bodies[0]  # held, like the same phish without it


def test_failed_quarantine_notice_never_delivers_the_original(
    loop_thread: LoopThread, tmp_path: Path, fault: Callable[[str], None]
) -> None:
    fault("notice-raises")
    observed = Observed.new()
    with scanning_proxy(loop_thread, tmp_path, {}, observed) as (proxy, _):
        _, bodies = fetch_all(proxy.port)
    assert b"198.51.100.7" not in bodies[1]  # PHISH is judged "quarantine" (score 15.5)


def test_transient_scanner_failure_is_judged_again_next_session(
    loop_thread: LoopThread, tmp_path: Path, fault: Callable[[str], None]
) -> None:
    observed = Observed.new()
    with scanning_proxy(loop_thread, tmp_path, {}, observed) as (proxy, _):
        fault("raise")
        _, during = fetch_all(proxy.port)
        assert during[1].startswith(b"X-Popproxy-Verdict: defang")  # suspicious meanwhile
        fault("")  # the scanner works again
        _, after = fetch_all(proxy.port)
    assert b"198.51.100.7/login" not in after[1]  # judged now: quarantined
