"""The first listing within scan.listing_budget (issue 17 item 3), on the session harness.

The upstream takes 5 s (virtual) to answer each RETR and the budget is 7 s, so the first STAT
judges the two newest messages and lists the rest at the upstream's size.  A client that LISTs
then and RETRs later gets exactly the octets it was told; a later session sees the normal
(judged) form, judged once.  Judging and rendering run in-process here (the worker protocol
has its own tests; tests/integration/test_listing_budget_dovecot.py runs real workers).
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest

from popproxy.policy import Scan
from popproxy.policy.schema_scan import ScanThresholds
from popproxy.pop3.framing import Unstuffer
from popproxy.proxy import listing_budget, scan_jobs
from popproxy.proxy.demo_upstream import DemoUpstream, Mailbox
from popproxy.proxy.observe import Observer
from popproxy.proxy.scanning import ScanService
from popproxy.proxy.verdict_cache import CachedVerdict
from popproxy.scan import Verdict
from popproxy.scan.evidence import Evidence
from tests.helpers import make_config
from tests.support.harness import (
    ScriptedUpstream,
    SessionPair,
    demo_responder,
    run,
)

PHISH = (b"From: Security <alert@example.test>\r\nSubject: Verify now\r\n"
         b"Content-Type: text/html\r\n\r\n"
         b'<a href="http://198.51.100.7/login">https://www.paypal.com/</a>\r\n'
         b"<form action=\"http://198.51.100.7/p\"><input type=password></form>\r\n"
         b".a line the wire dot-stuffs\r\n")
CLEAN = b"From: a@example.test\r\nSubject: hello\r\n\r\nJust text.\r\n..\r\n"
# Newest last: messages 4 and 5 are judged at listing, 1-3 are left to RETR.  Each differs
# (a message's identity is its UIDL and size: equal copies would share a verdict).
MESSAGES = [m.replace(b"\r\n\r\n", b"\r\nMessage-ID: <%d@example.test>\r\n\r\n" % n, 1)
            for n, m in enumerate([PHISH, CLEAN, PHISH, CLEAN, PHISH], 1)]
RETR_SECONDS = 5.0
BUDGET = 7.0


class InProcessScans(ScanService):
    """Judges and renders in the test's process (same functions the workers run)."""

    async def judge(self, original: Path, truncated: bool = False
                    ) -> tuple[Verdict, Evidence | None]:
        answer = scan_jobs.judge(self.scanner, original.read_bytes(), truncated)
        kept = answer["evidence"]
        return (scan_jobs.verdict_from_json(answer["verdict"]),
                None if kept is None else Evidence.from_json(kept))

    async def render_to(self, original: Path, entry: CachedVerdict, out: Path) -> int:
        return scan_jobs.render_to_file(self.config, original.read_bytes(), _order(entry), out)

    async def render_sized_to(self, original: Path, entry: CachedVerdict, out: Path,
                              size: int) -> bool:
        answer = scan_jobs.render_sized_to_file(original.read_bytes(), _order(entry), size, out,
                                                subject_prefix=self.config.subject_prefix)
        return bool(answer["held"])


def _order(entry: CachedVerdict) -> scan_jobs.RenderOrder:
    return scan_jobs.RenderOrder(scan_jobs.as_action(entry.action), entry.score, entry.reasons,
                                 entry.scanned_at, entry.quarantine_id)


def _body(reply: bytes) -> bytes:
    """A RETR answer's message as the client counts it: status line and terminator off,
    dot-stuffing undone."""
    assert reply.startswith(b"+OK") and reply.endswith(b"\r\n.\r\n")
    wire = reply.split(b"\r\n", 1)[1][: -len(b".\r\n")]
    return Unstuffer().feed(wire)


async def _session(service: ScanService, demo: DemoUpstream, observer: Observer
                   ) -> tuple[list[int], list[bytes]]:
    """LIST sizes, then every message by RETR, in one session."""
    upstream = ScriptedUpstream(respond=demo_responder(demo), delays={"RETR": RETR_SECONDS})
    config = make_config(1, scan={"enabled": True, **service.policy.model_dump(
        include={"listing_budget", "thresholds"})})
    async with SessionPair(config, upstream, observer=observer, scan=service) as pair:
        await pair.exchange(b"USER u\r\n")
        assert (await pair.exchange(b"PASS p\r\n")).startswith(b"+OK")
        listing = await pair.exchange(b"LIST\r\n")
        sizes = [int(line.split()[1]) for line in listing.split(b"\r\n")[1:-2]]
        bodies = [_body(await pair.exchange(b"RETR %d\r\n" % n)) for n in range(1, 6)]
    return sizes, bodies


def _count(observer: Observer, name: str, **labels: str) -> float:
    return observer.metrics.registry.get_sample_value(name, labels) or 0.0


@pytest.mark.parametrize("action", ["quarantine", "defang"])
def test_list_during_the_budget_fallback_then_retr_gets_the_listed_size(
        tmp_path: Path, action: str) -> None:
    demo = DemoUpstream({b"u": Mailbox(b"p", list(MESSAGES))})
    observer = Observer()
    # PHISH scores 15.5: quarantined by default, defanged under a higher quarantine threshold.
    thresholds = {} if action == "quarantine" else {"quarantine": 100.0}
    service = InProcessScans(Scan(listing_budget=BUDGET, thresholds=ScanThresholds(**thresholds)),
                             tmp_path / "state", observer)

    async def main() -> None:
        first_sizes, first = await _session(service, demo, observer)
        assert _count(observer, "popproxy_scan_listing_deferred_total") == 3
        # Deferred ones are listed at the upstream's size, and RETR gives exactly that.
        assert first_sizes[:3] == [len(m) for m in MESSAGES[:3]]
        assert [len(b) for b in first] == first_sizes
        assert first[1] == MESSAGES[1]  # judged clean at RETR: delivered as it is
        for phish in (first[0], first[2]):  # judged at RETR: size-kept, never as it came
            assert b"http://" not in phish and b"https://" not in phish
            if action == "quarantine":  # our padded notice; the original is held
                assert b"[QUARANTINED]" in phish
            else:  # the equal-length defang: the message is still there, its links inert
                assert b"hxxp://198_51_100_7/login" in phish and b"Verify now" in phish
        # Held: message 5 (judged at listing) and 1, 3 (at RETR); a defang holds nothing.
        assert len(service.quarantine.list()) == (3 if action == "quarantine" else 0)
        assert b"https://" not in first[4]  # judged at listing: the normal form
        downloads = _count(observer, "popproxy_scan_judged_total", how="downloaded")
        assert downloads == 5
        second_sizes, second = await _session(service, demo, observer)
        # Later sessions: the normal form, every verdict from the cache (nothing judged anew).
        assert _count(observer, "popproxy_scan_judged_total", how="downloaded") == downloads
        assert [len(b) for b in second] == second_sizes
        assert second_sizes[0] != len(MESSAGES[0]) and second_sizes[3:] == first_sizes[3:]
        assert second[1] == MESSAGES[1] and b"https://" not in second[0]
        assert _count(observer, "popproxy_scan_listing_deferred_total") == 3
        assert _count(observer, "popproxy_scan_listing_seconds_count") == 2

    run(main)


def test_a_tag_judged_at_retr_keeps_a_marker_where_its_subject_has_room(
        tmp_path: Path) -> None:
    roomy = PHISH.replace(b"Subject: Verify now", b"Subject: Verify your mailbox today")
    short = PHISH.replace(b"Subject: Verify now", b"Subject: Act now")
    mail = [m.replace(b"\r\n\r\n", b"\r\nMessage-ID: <%d@example.test>\r\n\r\n" % n, 1)
            for n, m in enumerate([roomy, short, CLEAN, CLEAN], 1)]
    demo = DemoUpstream({b"u": Mailbox(b"p", mail)})
    observer = Observer()
    # PHISH scores 15.5: tagged when defang and quarantine are out of reach.
    tag_only = ScanThresholds(defang=100.0, quarantine=100.0, tag=1.0)
    service = InProcessScans(Scan(listing_budget=BUDGET, thresholds=tag_only,
                                  subject_prefix="[CAUTION]"), tmp_path / "state", observer)

    async def main() -> None:
        upstream = ScriptedUpstream(respond=demo_responder(demo), delays={"RETR": RETR_SECONDS})
        config = make_config(1, scan={"enabled": True, "listing_budget": BUDGET})
        async with SessionPair(config, upstream, observer=observer, scan=service) as pair:
            await pair.exchange(b"USER u\r\n")
            await pair.exchange(b"PASS p\r\n")
            listing = await pair.exchange(b"LIST\r\n")  # 3 and 4 judged; 1 and 2 deferred
            sizes = [int(line.split()[1]) for line in listing.split(b"\r\n")[1:-2]]
            marked, degraded = [_body(await pair.exchange(b"RETR %d\r\n" % n)) for n in (1, 2)]
        assert _count(observer, "popproxy_scan_listing_deferred_total") == 2
        assert [len(marked), len(degraded)] == sizes[:2] == [len(mail[0]), len(mail[1])]
        # Room in the Subject: the configured prefix over its start, links inert as a defang.
        assert b"Subject: [CAUTION] Verify your    \r\n" in marked  # the words that fit
        assert b"hxxp://198_51_100_7/login" in marked
        # " Act now" is shorter than " [CAUTION]": no room, the degraded form (defang alone).
        assert b"Subject: Act now\r\n" in degraded and b"hxxp://198_51_100_7/" in degraded

    run(main)


def test_a_deferred_message_judged_clean_is_not_kept_in_the_spool(tmp_path: Path) -> None:
    demo = DemoUpstream({b"u": Mailbox(b"p", list(MESSAGES))})
    observer = Observer()
    service = InProcessScans(Scan(listing_budget=BUDGET), tmp_path / "state", observer)

    async def main() -> None:
        upstream = ScriptedUpstream(respond=demo_responder(demo), delays={"RETR": RETR_SECONDS})
        config = make_config(1, scan={"enabled": True, "listing_budget": BUDGET})
        async with SessionPair(config, upstream, observer=observer, scan=service) as pair:
            await pair.exchange(b"USER u\r\n")
            await pair.exchange(b"PASS p\r\n")
            listing = await pair.exchange(b"LIST\r\n")  # message 2 (clean) is deferred
            first = _body(await pair.exchange(b"RETR 2\r\n"))  # judged now: clean
            assert not list(service.spool_dir.rglob("2.*"))  # its downloaded copy is gone
            again = _body(await pair.exchange(b"RETR 2\r\n"))  # relayed as any clean one
        assert first == again == MESSAGES[1]
        assert listing.split(b"\r\n")[2] == b"2 %d" % len(MESSAGES[1])
        assert upstream.verbs.count("RETR") == 2 + 2  # 4 and 5 at listing, 2 twice

    run(main)


UTF16_PHISH = (b"From: Security <alert@example.test>\r\nSubject: Verify now\r\n"
               b"Content-Type: text/html; charset=utf-16\r\n"
               b"Content-Transfer-Encoding: base64\r\n\r\n"
               + base64.encodebytes(PHISH.split(b"\r\n\r\n", 1)[1].decode().encode("utf-16"))
               .replace(b"\n", b"\r\n"))


def test_a_defang_impossible_at_the_same_size_is_held_behind_the_padded_notice(
        tmp_path: Path) -> None:
    # UTF-16 text: equal-length substitution cannot promise to find its links.
    demo = DemoUpstream({b"u": Mailbox(b"p", [UTF16_PHISH, CLEAN])})
    observer = Observer()
    service = InProcessScans(Scan(listing_budget=0.1,
                                  thresholds=ScanThresholds(quarantine=100.0)),
                             tmp_path / "state", observer)

    async def main() -> None:
        upstream = ScriptedUpstream(respond=demo_responder(demo), delays={"RETR": 1.0})
        config = make_config(1, scan={"enabled": True, "listing_budget": 0.1})
        async with SessionPair(config, upstream, observer=observer, scan=service) as pair:
            await pair.exchange(b"USER u\r\n")
            await pair.exchange(b"PASS p\r\n")
            stat = await pair.exchange(b"STAT\r\n")  # message 2 judged, 1 left to RETR
            assert stat.startswith(b"+OK 2 ")
            assert await pair.exchange(b"LIST 1\r\n") == b"+OK 1 %d\r\n" % len(UTF16_PHISH)
            top = await pair.exchange(b"TOP 1 0\r\n")  # judged now: our notice's header
            assert b"[QUARANTINED]" in top
            held = _body(await pair.exchange(b"RETR 1\r\n"))
        assert len(held) == len(UTF16_PHISH) and b"Quarantine id" in held
        assert len(service.quarantine.list()) == 1  # the original is held, never delivered

    run(main)


def test_another_session_is_answered_while_a_big_listing_re_scores(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # One verdict per batch: the listing of u's 16 messages takes 16 batches, one loop step
    # each.  v's NOOP goes through sockets (client, upstream and back: about 8 steps).
    monkeypatch.setattr(listing_budget, "LISTING_BATCH", 1)
    mail = [CLEAN.replace(b"\r\n\r\n", b"\r\nMessage-ID: <%d@x.test>\r\n\r\n" % n, 1)
            for n in range(16)]
    demo = DemoUpstream({b"u": Mailbox(b"p", mail), b"v": Mailbox(b"p", [CLEAN])})
    observer = Observer()
    state = tmp_path / "state"

    async def main() -> None:
        judged = InProcessScans(Scan(), state, observer)
        await _login_and(judged, demo, observer, b"u", b"STAT\r\n")  # all 16 judged, cached
        # Another threshold: u's next listing re-scores the 16 verdicts (none downloaded).
        later = InProcessScans(Scan(thresholds=ScanThresholds(quarantine=100.0)), state,
                               observer)
        config = make_config(1, scan={"enabled": True})
        other = SessionPair(config, ScriptedUpstream(respond=demo_responder(demo)),
                            observer=observer, scan=later)
        batches: list[bool] = []  # per batch: had v's NOOP been answered before it?
        batch = later.usable_verdicts

        async def watched(*args: Any) -> dict[str, CachedVerdict]:
            if not batches:  # v's command arrives as u's listing starts
                other.feed(b"NOOP\r\n")
            batches.append(b"+OK" in other.received())
            return await batch(*args)

        monkeypatch.setattr(later, "usable_verdicts", watched)
        async with other:
            await other.exchange(b"USER v\r\n")
            await other.exchange(b"PASS p\r\n")
            stat = await _login_and(later, demo, observer, b"u", b"STAT\r\n")
        assert stat == b"+OK 16 %d\r\n" % sum(len(m) for m in mail)
        assert _count(observer, "popproxy_scan_judged_total", how="rescored") == 16
        # v was answered between u's batches, long before u's listing ended.
        assert len(batches) == 16 and not batches[0] and any(batches[1:12])

    run(main)


async def _login_and(service: ScanService, demo: DemoUpstream, observer: Observer,
                     user: bytes, command: bytes) -> bytes:
    """Log ``user`` in through a session of ``service``; the reply to ``command``."""
    config = make_config(1, scan={"enabled": True})
    upstream = ScriptedUpstream(respond=demo_responder(demo))
    async with SessionPair(config, upstream, observer=observer, scan=service) as pair:
        await pair.exchange(b"USER " + user + b"\r\n")
        assert (await pair.exchange(b"PASS p\r\n")).startswith(b"+OK")
        return await pair.exchange(command)
