"""Issue 14, critical: one crafted message must not freeze every session, nor walk through.

Scans and renders run in worker processes killed at their deadline; the event loop only waits
on a pipe.  These tests use real sockets: one client fetches hostile messages while another
connects, logs in and asks STAT, timed in the test.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from popproxy.metrics import Metrics
from popproxy.proxy import scanning
from popproxy.proxy.demo_upstream import DemoUpstream, Mailbox
from popproxy.proxy.observe import Observer
from popproxy.quarantine import QuarantineStore
from tests.helpers import LoopThread, RunningProxy, make_config, running_demo, running_proxy
from tests.integration.rawpop import RawPOP3
from tests.proxy.spin_worker import SPIN_MARK

PHISH_LINK = b'<a href="http://198.51.100.7/login">Sign in to PayPal</a>'
# The inputs: an ordinary phishing link, then the tokenizer bomb (100 KB) or the
# defang bomb (72 KB).  They must cost their budget at most, and never be delivered live.
TOKENIZER_BOMB = (b"From: Security <alert@example.test>\r\nSubject: Verify now\r\n"
                  b"Content-Type: text/html\r\n\r\n" + PHISH_LINK + b"\r\n<a" + b"b" * 100_000
                  + b"\r\n")
DEFANG_BOMB = (b"From: Security <alert@example.test>\r\nSubject: Verify now\r\n"
               b"Content-Type: text/html\r\n\r\n" + PHISH_LINK + b"\r\n"
               + b"<a " * 24_000 + b"\r\n")
SPINNER = (b"From: Security <alert@example.test>\r\nSubject: Verify now\r\n" + SPIN_MARK
           + b"\r\nContent-Type: text/html\r\n\r\n" + PHISH_LINK + b"\r\n")
CLEAN = b"From: a@example.test\r\nSubject: hello\r\n\r\nJust text.\r\n"
# A greeting, a login and STAT of an already judged... or small clean mailbox: far under this.
QUICK = 1.0


@contextmanager
def _proxy(loop: LoopThread, tmp: Path, hostile: list[bytes], scan: dict[str, Any],
           metrics: Metrics) -> Iterator[RunningProxy]:
    demo = DemoUpstream({b"mallory": Mailbox(b"p", list(hostile)),
                         b"alice": Mailbox(b"p", [CLEAN, CLEAN])})
    with running_demo(loop, demo):
        config = make_config(demo.port, scan={"enabled": True, "workers": 2, **scan},
                             state_dir=str(tmp))
        with running_proxy(config, loop, Observer(metrics)) as proxy:
            yield proxy


def _fetch_all(port: int, user: str) -> list[bytes]:
    with RawPOP3(port, timeout=60) as c:
        c.login(user, "p")
        count = int(c.command("STAT").split()[1])
        bodies = [c.command(f"RETR {n}") for n in range(1, count + 1)]
        c.command("QUIT")
    return bodies


def _quick_login_and_stat(port: int) -> float:
    started = time.monotonic()
    with RawPOP3(port, timeout=30) as c:  # RawPOP3 reads the greeting on connect
        c.login("alice", "p")
        assert c.command("STAT").startswith(b"+OK 2 ")
        c.command("QUIT")
    return time.monotonic() - started


def _while_fetching(port: int, user: str) -> tuple[list[float], list[bytes]]:
    """Alice logs in (greeting, USER/PASS, STAT) repeatedly while ``user`` fetches."""
    bodies: list[bytes] = []
    fetcher = threading.Thread(target=lambda: bodies.extend(_fetch_all(port, user)))
    fetcher.start()
    times: list[float] = []
    # Until the fetch is over, and at least a few times in any case (fixed parsers may well
    # make the hostile fetch quicker than one login).
    while (fetcher.is_alive() and len(times) < 20) or len(times) < 3:
        times.append(_quick_login_and_stat(port))
    fetcher.join(120)
    assert not fetcher.is_alive()
    return times, bodies


def _counter(metrics: Metrics, name: str, **labels: str) -> float:
    value = metrics.registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


def test_worker_stuck_in_a_scan_is_killed_and_other_sessions_go_on(
        loop_thread: LoopThread, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A scan that never returns (pure Python, holding its GIL) is killed at the deadline;
    meanwhile another client's greeting + login + STAT stay quick; the message is delivered
    suspicious (never with its live link); the timeout is cached for the next session."""
    monkeypatch.setattr(scanning, "WORKER_COMMAND",
                        (sys.executable, "-m", "tests.proxy.spin_worker"))
    metrics = Metrics()
    with _proxy(loop_thread, tmp_path, [SPINNER, SPINNER], {"time_budget": 1.0},
                metrics) as proxy:
        _quick_login_and_stat(proxy.port)  # warm-up: Alice's mail judged, workers started
        times, bodies = _while_fetching(proxy.port, "mallory")
        assert max(times) < QUICK, times
        for body in bodies:
            assert body.startswith(b"+OK ")
            assert b"198.51.100.7" not in body  # render spun too: our notice, original held
        kills = _counter(metrics, "popproxy_scan_worker_kills_total", reason="timeout")
        assert kills >= 2  # the scans of both messages (and their renders)
        held = QuarantineStore(tmp_path / "quarantine").list()
        assert len(held) == 1  # the same bytes twice: one held copy
        # Next session: the timeouts were remembered, nothing is scanned again.
        started = time.monotonic()
        again = _fetch_all(proxy.port, "mallory")
        assert time.monotonic() - started < QUICK * 2 + 2 * scanning.KILL_GRACE + 2.0
        assert all(b"198.51.100.7" not in body for body in again)
        # The size announced for each message equals the octets sent (RFC 1939 section 5).
        for body in again:
            status, rest = body.split(b"\r\n", 1)
            assert int(status.split()[1]) == len(rest[:-3].replace(b"\r\n..", b"\r\n."))


@pytest.mark.parametrize("bomb", [TOKENIZER_BOMB, DEFANG_BOMB], ids=["tokenizer", "defang-tag"])
def test_crafted_message_does_not_stall_other_sessions(
        loop_thread: LoopThread, tmp_path: Path, bomb: bytes) -> None:
    """The issue's two crafted messages, with real workers: other sessions stay quick, and the
    phishing link before the bomb is judged (flagged for it), not waved through unscanned."""
    metrics = Metrics()
    variants = [bomb.replace(b"Verify", f"Verify {n}".encode()) for n in range(6)]
    with _proxy(loop_thread, tmp_path, variants, {"time_budget": 2.0}, metrics) as proxy:
        _quick_login_and_stat(proxy.port)
        times, bodies = _while_fetching(proxy.port, "mallory")
        assert max(times) < QUICK, times
        assert len(bodies) == len(variants)
        for body in bodies:
            head = body[:2000]
            assert b"X-Popproxy-Verdict: " in head and b"unscanned" not in head
            assert b"link-ip-host (198.51.100.7)" in head
