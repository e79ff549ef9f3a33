"""Issue 17 item 3 against a real Dovecot, through poplib and real scan workers: with a tiny
``scan.listing_budget`` the first STAT judges only the newest message and lists the rest at
Dovecot's sizes; a client that LISTs then and RETRs later gets exactly the listed octets for
every message, and the next session sees the normal (judged) forms, LIST == RETR again."""

from __future__ import annotations

import poplib
import subprocess
from pathlib import Path

import pytest

from popproxy.metrics import Metrics
from popproxy.proxy.observe import Observer
from tests.helpers import LoopThread, make_config, running_proxy
from tests.integration.dovecot import Dovecot
from tests.support.tools import require_tool

pytestmark = pytest.mark.dovecot

# Message 5 of the "scan" mailbox has no final newline: Dovecot itself lists 2 octets less
# than it sends (test_scan_consistency.py), so the comparison covers 1-4.  5 is the newest:
# the one judged at listing before the budget is spent.
COMPARED = range(1, 5)


def _login(port: int) -> poplib.POP3:
    client = poplib.POP3("127.0.0.1", port, timeout=60)
    client.user("scan")
    client.pass_("scanpw")
    return client


def _listing(client: poplib.POP3) -> dict[int, int]:
    _, lines, _ = client.list()
    return {int(n): int(size) for n, size in (line.split() for line in lines)}


def _retr_octets(client: poplib.POP3, number: int) -> tuple[int, bytes]:
    """The message's octets as RFC 1939 counts them (CRLF line ends, unstuffed) and its text."""
    _, lines, _ = client.retr(number)
    return sum(len(line) + 2 for line in lines), b"\r\n".join(lines)


def test_list_during_the_budget_fallback_equals_retr_for_every_message(
        dovecot: Dovecot, loop_thread: LoopThread, tmp_path: Path) -> None:
    observer = Observer(Metrics())
    scan = {"enabled": True, "listing_budget": 0.001}
    config = make_config(dovecot.port, scan=scan, state_dir=str(tmp_path / "state"))
    direct = poplib.POP3("127.0.0.1", dovecot.port, timeout=30)
    direct.user("scan")
    direct.pass_("scanpw")
    upstream_sizes = _listing(direct)
    direct.quit()
    with running_proxy(config, loop_thread, observer) as proxy:
        first = _login(proxy.port)
        first.stat()
        registry = observer.metrics.registry
        # 1-4 are always deferred (newest first: 5 is tried first); 5 as well when the
        # upstream's UIDL/LIST alone took longer than the 1 ms budget (a loaded machine).
        deferred = registry.get_sample_value("popproxy_scan_listing_deferred_total")
        assert deferred in (4, 5)
        listed = _listing(first)
        assert {n: listed[n] for n in COMPARED} == {n: upstream_sizes[n] for n in COMPARED}
        texts = {}
        for number in COMPARED:
            octets, texts[number] = _retr_octets(first, number)
            assert octets == listed[number], number
        first.quit()
        # The phishing message (2) judged at RETR: never delivered with a live link.
        assert b'href="http://198.51.100.7' not in texts[2]

        second = _login(proxy.port)
        normal = _listing(second)
        for number in COMPARED:
            assert _retr_octets(second, number)[0] == normal[number], number
        assert normal[2] != listed[2]  # the normal rendered form, cached at its own size
        second.quit()


def _curl(port: int, path: str = "") -> bytes:
    """One curl POP3 session: LIST with no path, RETR n with path n."""
    return subprocess.run(["curl", "-s", "--max-time", "60", "-u", "scan:scanpw",
                           f"pop3://127.0.0.1:{port}/{path}"],
                          capture_output=True, timeout=90, check=True).stdout


def _curl_sizes(port: int) -> dict[int, int]:
    return {int(n): int(size) for n, size in (line.split() for line in
                                               _curl(port).decode().splitlines())}


def test_curl_lists_during_the_fallback_and_later_sessions_see_the_judged_forms(
        dovecot: Dovecot, loop_thread: LoopThread, tmp_path: Path) -> None:
    """curl runs one command per session: the LIST of the budget-limited first session shows
    Dovecot's sizes, and later sessions list and RETR the judged forms, LIST == RETR."""
    require_tool("curl")
    scan = {"enabled": True, "listing_budget": 0.001}
    config = make_config(dovecot.port, scan=scan, state_dir=str(tmp_path / "state"))
    direct = poplib.POP3("127.0.0.1", dovecot.port, timeout=30)
    direct.user("scan")
    direct.pass_("scanpw")
    upstream_sizes = _listing(direct)
    direct.quit()
    with running_proxy(config, loop_thread, Observer(Metrics())) as proxy:
        during = _curl_sizes(proxy.port)
        assert {n: during[n] for n in COMPARED} == {n: upstream_sizes[n] for n in COMPARED}
        for number in COMPARED:  # each a session of its own: judged now, cached
            _curl(proxy.port, str(number))
        judged = _curl_sizes(proxy.port)
        assert judged[2] != upstream_sizes[2]  # the phishing message's defanged form
        for number in COMPARED:
            assert len(_curl(proxy.port, str(number))) == judged[number], number
