"""Issue 17 item 3 against a real Dovecot, through poplib and real scan workers: with a tiny
``scan.listing_budget`` the first STAT judges only the newest message and lists the rest at
Dovecot's sizes; a client that LISTs then and RETRs later gets exactly the listed octets for
every message, and the next session sees the normal (judged) forms, LIST == RETR again."""

from __future__ import annotations

import poplib
from pathlib import Path

import pytest

from popproxy.metrics import Metrics
from popproxy.proxy.observe import Observer
from tests.helpers import LoopThread, make_config, running_proxy
from tests.integration.dovecot import Dovecot
from tests.integration.pop3_clients import curl, curl_sizes, listing, login

pytestmark = pytest.mark.dovecot

# Message 5 of the "scan" mailbox has no final newline: Dovecot itself lists 2 octets less
# than it sends (test_scan_consistency.py), so the comparison covers 1-4.  5 is the newest:
# the one judged at listing before the budget is spent.
COMPARED = range(1, 5)




def _retr_octets(client: poplib.POP3, number: int) -> tuple[int, bytes]:
    """The message's octets as RFC 1939 counts them (CRLF line ends, unstuffed) and its text."""
    _, lines, _ = client.retr(number)
    return sum(len(line) + 2 for line in lines), b"\r\n".join(lines)


def test_list_during_the_budget_fallback_equals_retr_for_every_message(
        dovecot: Dovecot, loop_thread: LoopThread, tmp_path: Path) -> None:
    observer = Observer(Metrics())
    scan = {"enabled": True, "listing_budget": 0.001}
    config = make_config(dovecot.port, scan=scan, state_dir=str(tmp_path / "state"))
    direct = login(dovecot.port)
    upstream_sizes = listing(direct)
    direct.quit()
    with running_proxy(config, loop_thread, observer) as proxy:
        first = login(proxy.port)
        first.stat()
        registry = observer.metrics.registry
        # 1-4 are always deferred (newest first: 5 is tried first); 5 as well when the
        # upstream's UIDL/LIST alone took longer than the 1 ms budget (a loaded machine).
        deferred = registry.get_sample_value("popproxy_scan_listing_deferred_total")
        assert deferred in (4, 5)
        listed = listing(first)
        assert {n: listed[n] for n in COMPARED} == {n: upstream_sizes[n] for n in COMPARED}
        texts = {}
        for number in COMPARED:
            octets, texts[number] = _retr_octets(first, number)
            assert octets == listed[number], number
        first.quit()
        # The phishing message (2) judged at RETR: never delivered with a live link.
        assert b'href="http://198.51.100.7' not in texts[2]

        second = login(proxy.port)
        normal = listing(second)
        for number in COMPARED:
            assert _retr_octets(second, number)[0] == normal[number], number
        assert normal[2] != listed[2]  # the normal rendered form, cached at its own size
        second.quit()




def test_curl_lists_during_the_fallback_and_later_sessions_see_the_judged_forms(
        dovecot: Dovecot, loop_thread: LoopThread, tmp_path: Path) -> None:
    """curl runs one command per session: the LIST of the budget-limited first session shows
    Dovecot's sizes, and later sessions list and RETR the judged forms, LIST == RETR."""
    scan = {"enabled": True, "listing_budget": 0.001}
    config = make_config(dovecot.port, scan=scan, state_dir=str(tmp_path / "state"))
    direct = login(dovecot.port)
    upstream_sizes = listing(direct)
    direct.quit()
    with running_proxy(config, loop_thread, Observer(Metrics())) as proxy:
        during = curl_sizes(proxy.port)
        assert {n: during[n] for n in COMPARED} == {n: upstream_sizes[n] for n in COMPARED}
        for number in COMPARED:  # each a session of its own: judged now, cached
            curl(proxy.port, str(number))
        judged = curl_sizes(proxy.port)
        assert judged[2] != upstream_sizes[2]  # the phishing message's defanged form
        for number in COMPARED:
            assert len(curl(proxy.port, str(number))) == judged[number], number


def test_a_tag_judged_at_retr_shows_the_configured_prefix_at_the_listed_size(
        dovecot: Dovecot, loop_thread: LoopThread, tmp_path: Path) -> None:
    """Real workers render the sized tag with the policy's subject_prefix."""
    scan = {"enabled": True, "listing_budget": 0.001, "subject_prefix": "[CAUTION]",
            "thresholds": {"defang": 100.0, "quarantine": 100.0}}  # the phishing one is tagged
    config = make_config(dovecot.port, scan=scan, state_dir=str(tmp_path / "state"))
    with running_proxy(config, loop_thread, Observer(Metrics())) as proxy:
        client = login(proxy.port)
        listed = listing(client)
        octets, text = _retr_octets(client, 2)
        client.quit()
    assert octets == listed[2]
    assert b"\r\nSubject: [CAUTION] Urgent: verify   \r\n" in text  # the words that fit
    assert b'href="http://198.51.100.7' not in text  # and defanged, as the degraded form was
