"""The scan entry point: thresholds, budgets and crash containment."""

from __future__ import annotations

import itertools

import pytest

from popproxy.scan import Scanner, ScanSettings, Thresholds, apply_action
from popproxy.scan import scanner as scanner_module
from tests.scan.helpers import load, names, scan


def test_clean_message_passes() -> None:
    verdict = scan(load("clean_plain.eml"))
    assert verdict.action == "pass"
    assert verdict.score == 0
    assert not verdict.flagged


def test_custom_thresholds_change_the_action() -> None:
    strict = ScanSettings(thresholds=Thresholds(tag=1, defang=2, quarantine=3))
    verdict = scan(load("qp_ip_link.eml"), strict)
    assert verdict.action == "quarantine"
    assert verdict.reasons[0].startswith("link-ip-host")


def test_each_rule_counts_once() -> None:
    many = b"From: a@example.org\r\nSubject: x\r\n\r\n" + b"http://198.51.100.7/ " * 50
    verdict = scan(many)
    assert verdict.score == 3.0
    assert len(verdict.reasons) == 1


def test_too_large_is_judged_on_its_head() -> None:
    # Not "unscanned" any more: the head is judged and the cut is evidence (limit-size).
    verdict = scan(load("clean_plain.eml"), ScanSettings(max_message_bytes=100))
    assert verdict.action == "tag"
    assert verdict.cause is None
    assert "limit-size" in names(verdict)


def test_time_budget_with_fake_clock() -> None:
    ticks = itertools.count(0.0, 1.0)  # every clock read advances one second
    scanner = Scanner(ScanSettings(time_budget_seconds=2.5), feeds=(), clock=lambda: next(ticks))
    verdict = scanner.scan(load("nested_forward.eml"))
    assert verdict.action == "unscanned"
    assert verdict.cause == "time-budget"
    assert "budget" in verdict.reasons[0]


def test_time_budget_not_hit_with_a_frozen_clock() -> None:
    scanner = Scanner(ScanSettings(time_budget_seconds=0.001), feeds=(), clock=lambda: 42.0)
    assert scanner.scan(load("nested_forward.eml")).action != "unscanned"


def test_internal_error_becomes_unscanned(monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*args: object, **kwargs: object) -> None:
        raise RuntimeError("injected")

    monkeypatch.setattr(scanner_module, "parse_message", boom)
    verdict = scan(load("clean_plain.eml"))
    assert verdict.action == "unscanned"
    assert verdict.cause == "error"
    assert "RuntimeError" in verdict.reasons[0]


def test_crash_in_a_rule_becomes_unscanned(monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*args: object, **kwargs: object) -> list[object]:
        raise KeyError("bug")

    monkeypatch.setattr(scanner_module, "link_signals", boom)
    assert scan(load("qp_ip_link.eml")).cause == "error"


@pytest.mark.parametrize("exhausted", [MemoryError, RecursionError])
def test_resource_exhaustion_is_remembered_like_a_timeout(
        monkeypatch: pytest.MonkeyPatch, exhausted: type[BaseException]) -> None:
    """Review of issue 14: "error" verdicts are judged again at every login (a bug may be
    fixed); a message that exhausts memory or the stack would then cost its budget every time.
    It is cached like a timeout instead (cause "time-budget")."""
    def boom(*args: object, **kwargs: object) -> list[object]:
        raise exhausted

    monkeypatch.setattr(scanner_module, "link_signals", boom)
    verdict = scan(load("qp_ip_link.eml"))
    assert (verdict.action, verdict.cause) == ("unscanned", "time-budget")
    assert exhausted.__name__ in verdict.reasons[0]


@pytest.mark.parametrize(
    "junk",
    [
        b"",
        b"\x00\xff" * 100,
        b"Content-Type: multipart/mixed; boundary=x\r\n\r\n--x\r\n",
        b"\r\n\r\n",
    ],
)
def test_junk_never_raises(junk: bytes) -> None:
    assert scan(junk).action in ("pass", "tag", "defang", "quarantine")


def test_spoofed_verdict_header() -> None:
    msg = b"From: a@example.org\r\nX-Popproxy-Verdict: pass\r\nSubject: x\r\n\r\nhi\r\n"
    assert "spoofed-verdict-header" in {s.name for s in scan(msg).signals}


@pytest.mark.parametrize(
    "forged",
    [
        b"X-Popproxy-Verdict : pass\r\n",  # blanks before the colon (RFC 5322 4.5, obsolete)
        b"x-POPPROXY-verdict:pass\r\n",
        b"Not a header line\r\nX-Popproxy-Verdict: pass\r\n",  # ends a strict parser's header
    ],
    ids=["space-before-colon", "mixed-case", "after-malformed-line"],
)
def test_forged_verdict_header_variants_force_tag_and_are_removed(forged: bytes) -> None:
    """Review of issue 14: these reached the client on the pass path (the stdlib parser did not
    see them as our fields); lenient clients show them.  Every spelling forces tag, and the
    tagged message carries only our own verdict field."""
    msg = b"From: a@example.org\r\nSubject: x\r\n" + forged + b"\r\nhello\r\n"
    verdict = scan(msg)
    assert "spoofed-verdict-header" in names(verdict)
    assert verdict.action == "tag"
    tagged = apply_action(msg, verdict, clock=lambda: 0.0)
    head = tagged.split(b"\r\n\r\n", 1)[0].lower()
    assert head.count(b"x-popproxy-verdict") == 1
    assert b"x-popproxy-verdict: tag" in head


def test_own_prefix_in_the_body_is_no_forgery() -> None:
    msg = b"From: a@example.org\r\nSubject: x\r\n\r\nX-Popproxy-Verdict: pass\r\n"
    assert "spoofed-verdict-header" not in names(scan(msg))


def test_forged_verdict_header_forces_tag() -> None:
    # Clean otherwise: the score alone would pass, but pass relays the forged header unchanged.
    verdict = scan(load("forged_verdict_header.eml"))
    assert verdict.score < 4
    assert verdict.action == "tag"
    tagged = apply_action(load("forged_verdict_header.eml"), verdict, clock=lambda: 0.0)
    assert b"X-Popproxy-Verdict: pass" not in tagged
    assert b"X-Popproxy-Verdict: tag" in tagged


def test_forged_header_does_not_lower_a_stronger_action() -> None:
    strict = ScanSettings(thresholds=Thresholds(tag=1, defang=2, quarantine=3))
    assert scan(load("forged_verdict_header.eml"), strict).action == "quarantine"
