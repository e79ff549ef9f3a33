"""Actions: tag, defang and quarantine notices produce parseable MIME; pass changes nothing."""

from __future__ import annotations

import email
import email.policy
import re
import time
from collections.abc import Callable
from email.message import Message

from popproxy.scan import (
    ScanSettings,
    Verdict,
    apply_action,
    quarantine_notice,
)
from popproxy.scan.defang import defang_html, defang_text
from tests.scan.helpers import load

TAG = Verdict(action="tag", score=5.0, reasons=("link-ip-host (198.51.100.7)", "lure-urgency"))
CLICKABLE = re.compile(r"(?i)\b(?:https?|ftp)://|href\s*=|action\s*=")


def _parse(data: bytes) -> Message:
    return email.message_from_bytes(data, policy=email.policy.compat32)


def _texts(msg: Message) -> list[str]:
    out = []
    for part in msg.walk():
        if part.get_content_maintype() == "text":
            payload = part.get_payload(decode=True)
            assert isinstance(payload, bytes)
            out.append(payload.decode(part.get_content_charset() or "ascii"))
    return out


def test_pass_and_unscanned_return_the_same_object() -> None:
    data = load("clean_plain.eml")
    assert apply_action(data, Verdict(action="pass", score=0.0)) is data
    assert apply_action(data, Verdict.unscanned("error", "x")) is data


def test_tag_adds_headers_and_prefix() -> None:
    data = load("qp_ip_link.eml")
    out = apply_action(data, TAG)
    msg = _parse(out)
    assert msg["X-Popproxy-Verdict"] == "tag; score=5"
    assert "link-ip-host (198.51.100.7)" in msg["X-Popproxy-Reasons"]
    assert str(msg["Subject"]).startswith("[SUSPICIOUS] =?UTF-8?Q?")
    assert out.endswith(data.split(b"\r\n\r\n", 1)[1])  # body bytes untouched
    assert b"\r\n" in out and b"\n" not in out.replace(b"\r\n", b"")


def test_tag_replaces_forged_headers_and_is_idempotent_on_prefix() -> None:
    data = (
        b"From: a@example.org\r\nX-Popproxy-Verdict: pass\r\n"
        b"Subject: [SUSPICIOUS] hi\r\n\r\nb\r\n"
    )
    out = apply_action(data, TAG)
    msg = _parse(out)
    assert msg.get_all("X-Popproxy-Verdict") == ["tag; score=5"]
    assert msg["Subject"] == "[SUSPICIOUS] hi"


def test_tag_without_prefix_and_without_subject() -> None:
    out = apply_action(b"From: a@example.org\n\nbody\n", TAG, ScanSettings(subject_prefix=""))
    msg = _parse(out)
    assert msg["Subject"] is None
    assert msg.get_payload() == "body\n"


def test_defang_text_and_html() -> None:
    assert defang_text("see https://evil.example/a.b?x=1 or www.evil.example") == (
        "see hxxps://evil[.]example/a.b?x=1 or www[.]evil[.]example"
    )
    html = '<p><a class="x" href="https://evil.example/p">Sign in</a></p>'
    out = defang_html(html)
    assert "href" not in out
    assert "[hxxps://evil[.]example/p]" in out
    assert "Sign in" in out


def test_defang_message_leaves_nothing_clickable() -> None:
    for name in ("qp_ip_link.eml", "b64_html_mismatch.eml", "nested_forward.eml"):
        data = load(name)
        out = apply_action(data, Verdict(action="defang", score=8.0, reasons=("x",)))
        msg = _parse(out)
        assert msg["X-Popproxy-Verdict"] == "defang; score=8"
        texts = _texts(msg)
        assert texts, name
        for text in texts:
            assert not CLICKABLE.search(text), (name, text)
        assert not msg.defects


def test_quarantine_notice() -> None:
    data = load("b64_html_mismatch.eml")
    verdict = Verdict(action="quarantine", score=12.5, reasons=("link-feed-host (evil.test)",))
    out = apply_action(data, verdict, quarantine_id="Q123", clock=lambda: 0.0)
    msg = _parse(out)
    assert msg["X-Popproxy-Quarantine-Id"] == "Q123"
    assert msg["To"] == "bob@example.net"
    assert msg["Date"] == "Thu, 01 Jan 1970 00:00:00 -0000"
    body = _texts(msg)[0]
    assert "Q123" in body and "link-feed-host (evil.test)" in body
    assert "Dear customer" not in body  # never the original body
    assert not msg.defects


def test_quarantine_default_id_is_stable() -> None:
    data = load("attach_exe.eml")
    verdict = Verdict(action="quarantine", score=13.0)
    a = apply_action(data, verdict, clock=lambda: 0.0)
    b = quarantine_notice(data, verdict, quarantine_id="x", notice_from="p <p@x.test>", now=0.0)
    assert a == apply_action(data, verdict, clock=lambda: 0.0)
    assert _parse(a)["X-Popproxy-Quarantine-Id"] != _parse(b)["X-Popproxy-Quarantine-Id"]


def test_header_injection_in_reasons_is_neutralised() -> None:
    from popproxy.scan.verdict import Signal

    sig = Signal(name="attach-risky-ext", weight=5.0, detail="a\r\nBcc: x@evil.test")
    verdict = Verdict(action="tag", score=5.0, reasons=(sig.reason(),))
    out = apply_action(b"From: a@example.org\r\n\r\nb\r\n", verdict)
    assert _parse(out)["Bcc"] is None


def _seconds(func: Callable[[], object]) -> float:
    start = time.perf_counter()
    func()
    return time.perf_counter() - start


def _assert_linear(func: Callable[[bytes], object], small: bytes, large: bytes) -> None:
    """``large`` is four times ``small``: linear costs 4x the time, quadratic 16x; best of
    three, and measured again once if over (a busy machine, not the code)."""
    for _ in range(2):
        t_small = min(_seconds(lambda: func(small)) for _ in range(3))
        t_large = min(_seconds(lambda: func(large)) for _ in range(3))
        if t_large < 8 * t_small + 0.01:
            return
    raise AssertionError(f"not linear: {t_small:.4f} s, then {t_large:.4f} s")


def test_tag_of_a_header_folded_over_many_lines_is_linear() -> None:
    """Attack: one header field folded over 400,000 lines.  Joining the lines with "+=" was
    quadratic (1.6 MB: 35 s) on every render of a tagged message."""

    def message(lines: int) -> bytes:
        return b"From: a@example.org\r\nX-Long: a\r\n" + b" x\r\n" * lines + b"\r\nbody\r\n"

    large = message(200_000)
    _assert_linear(lambda m: apply_action(m, TAG), message(50_000), large)
    assert _parse(apply_action(large, TAG))["X-Popproxy-Verdict"] == "tag; score=5"


def test_quarantine_notice_of_a_huge_encoded_word_subject_is_fast() -> None:
    """Attack: a 140 KB Subject of unterminated encoded words ("=?a?q?x" repeated): the
    stdlib's RFC 2047 decoder is quadratic on it (38 s).  The notice decodes a bounded head."""
    data = b"From: a@example.org\r\nSubject: " + b"=?a?q?x" * 20_000 + b"\r\n\r\nbody\r\n"
    verdict = Verdict(action="quarantine", score=15.0, reasons=("x",))
    assert _seconds(lambda: apply_action(data, verdict, clock=lambda: 0.0)) < 1.0
    msg = _parse(apply_action(data, verdict, clock=lambda: 0.0))
    assert "=?a?q?x" in _texts(msg)[0] and not msg.defects
