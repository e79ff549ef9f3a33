"""``--explain``: each signal counted or shadowed, evidence defanged and escaped, the model's
share shown apart.  The CLI's output on whole messages is tested in test_cli_scan.py."""

from __future__ import annotations

from popproxy.scan.explain import (
    contributions,
    defang,
    evidence_of,
    explain_lines,
    explain_record,
    model_points,
)
from popproxy.scan.settings import Thresholds
from popproxy.scan.verdict import Signal, Verdict
from tests.scan.helpers import DATA, scan

IP_HOST = Signal(name="link-ip-host", weight=3.0, detail="198.51.100.7",
                 evidence="link: http://198.51.100.7/login")
IP_OBFUSCATED = Signal(name="link-ip-obfuscated", weight=5.0, detail="0xc6.51.100.7")
LURE = Signal(name="lure-credentials", weight=2.0)


def test_explain_on_every_test_message_adds_up_to_the_verdict_score() -> None:
    for path in sorted(DATA.glob("*.eml")):
        verdict = scan(path.read_bytes())
        parts = contributions(verdict.signals)
        total = sum(p.points for p in parts) + model_points(verdict)
        assert round(total, 2) == verdict.score, path.name
        counted_groups = [p.group for p in parts if p.counted]
        assert len(counted_groups) == len(set(counted_groups)), path.name


def test_contributions_shadow_the_weaker_member_of_a_group() -> None:
    parts = contributions([IP_HOST, LURE, IP_OBFUSCATED, IP_HOST])
    assert [(p.signal.name, p.counted, p.shadowed_by, p.points) for p in parts] == [
        ("link-ip-obfuscated", True, "", 5.0),
        ("link-ip-host", False, "link-ip-obfuscated", 0.0),
        ("lure-credentials", True, "", 2.0),
    ]


def test_evidence_is_defanged_or_says_where_it_lies() -> None:
    assert evidence_of(IP_HOST) == "link: hxxp://198[.]51[.]100[.]7/login"
    assert evidence_of(LURE) == "wording of the subject or visible text (phrases not shown)"
    assert evidence_of(Signal(name="unknown-rule", weight=1.0)) == ""
    assert defang("see HTTPS://a.b.example/x.y") == "see HxxPS://a[.]b[.]example/x.y"


def test_lines_of_a_scored_message() -> None:
    verdict = Verdict(action="defang", score=7.0, signals=(IP_OBFUSCATED, IP_HOST, LURE))
    lines = explain_lines("msg.eml", verdict, Thresholds())
    assert lines[:3] == [
        "msg.eml",
        "  verdict defang, score 7 (tag at 4, defang at 7, quarantine at 10)",
        "  +5    counted   link-ip-obfuscated (0xc6.51.100.7)",
    ]
    assert ("   3    shadowed  link-ip-host (198.51.100.7): link-ip-obfuscated counts for "
            "group 'ip'") in lines


def test_lines_of_unscanned_forced_and_model_scored_messages() -> None:
    gave_up = Verdict.unscanned("time-budget", "over 5 s")
    assert explain_lines("m", gave_up, Thresholds())[1] == (
        "  verdict unscanned (time-budget): unscanned: over 5 s")
    limit = Signal(name="limit-links", weight=1.0)
    forced = explain_lines("m", Verdict(action="tag", score=1.0, signals=(limit,)),
                           Thresholds())
    assert forced[-1] == "  tagged although the score alone passes, because of: limit-links"
    boosted = Verdict(action="tag", score=4.5, signals=(LURE,))
    assert model_points(boosted) == 2.5
    assert explain_record(boosted)[-1]["signal"] == "(model)"
    assert any(line.startswith("  +2.5  model") for line in
               explain_lines("m", boosted, Thresholds()))


def test_nothing_from_the_message_reaches_the_terminal_raw() -> None:
    hostile = Signal(name="sender-brand-mismatch", weight=3.0, detail="pay\x1b[2Jpal",
                     evidence="From: \x1b]8;;https://evil.example/\x07PayPal")
    text = "\n".join(explain_lines("m\x1b", Verdict(action="pass", score=3.0,
                                                    signals=(hostile,)), Thresholds()))
    assert "\x1b" not in text and "\x07" not in text
    assert "https://evil" not in text
