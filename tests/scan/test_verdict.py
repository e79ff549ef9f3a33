"""Verdicts and signals: details safe for headers and logs, evidence kept out of reasons."""

from __future__ import annotations

import pytest

from popproxy.scan.limits import MAX_DETAIL_CHARS
from popproxy.scan.verdict import (
    MAX_EVIDENCE_CHARS,
    Signal,
    Verdict,
    clean_detail,
    clean_evidence,
    delivered_action,
)


@pytest.mark.parametrize(("text", "clean"), [
    ("paypal.com", "paypal.com"),
    ("evil\r\nX-Injected: 1", "evil??X-Injected: 1"),  # no header injection
    ("invoice\u202efdp.exe", "invoice\\u202efdp.exe"),  # right-to-left override shown
    ("tab\there", "tab?here"),  # ASCII controls become "?"
    ("caf\u00e9", "caf\\xe9"),
])
def test_clean_detail_escapes_what_is_not_printable_ascii(text: str, clean: str) -> None:
    assert clean_detail(text) == clean


def test_clean_detail_and_evidence_are_capped() -> None:
    long = "a" * 1000
    assert clean_detail(long) == "a" * (MAX_DETAIL_CHARS - 3) + "..."
    assert len(clean_evidence(long)) == MAX_EVIDENCE_CHARS
    assert clean_detail("\x00" * 1000) == "?" * (MAX_DETAIL_CHARS - 3) + "..."


def test_signal_reason_and_hidden_evidence() -> None:
    plain = Signal(name="link-ip-host", weight=3.0)
    detailed = Signal(name="link-ip-host", weight=3.0, detail="198.51.100.7",
                      evidence="http://198.51.100.7/login")
    assert plain.reason() == "link-ip-host"
    assert detailed.reason() == "link-ip-host (198.51.100.7)"
    assert "login" not in repr(detailed)
    assert detailed == Signal(name="link-ip-host", weight=3.0, detail="198.51.100.7")


def test_verdict_flags_and_unscanned() -> None:
    assert not Verdict(action="pass", score=0.0).flagged
    assert Verdict(action="tag", score=4.0).flagged
    gave_up = Verdict.unscanned("time-budget", "over 5 s")
    assert (gave_up.action, gave_up.kind, gave_up.score) == ("unscanned", "unscanned", 0.0)
    assert gave_up.reasons == ("unscanned: over 5 s",) and gave_up.cause == "time-budget"
    assert gave_up.flagged


@pytest.mark.parametrize(("action", "fail_mode", "too_large", "delivered"), [
    ("pass", "open", False, "pass"),
    ("defang", "open", False, "defang"),
    ("unscanned", "open", False, "tag"),  # fail_open_action below
    ("unscanned", "closed", False, "quarantine"),
    ("pass", "open", True, "tag"),  # over the cap: at least tagged (limit-size)
    ("defang", "open", True, "quarantine"),  # cannot be defanged while streamed
    ("unscanned", "open", True, "tag"),
])
def test_delivered_action_is_the_proxy_rule(action: str, fail_mode: str, too_large: bool,
                                            delivered: str) -> None:
    verdict = (Verdict.unscanned("time-budget", "slow") if action == "unscanned"
               else Verdict(action=action, score=1.0))  # type: ignore[arg-type]
    assert delivered_action(verdict, fail_mode, "tag", too_large) == delivered
