"""Sender, wording and obfuscation signals."""

from __future__ import annotations

import pytest

from popproxy.scan.addresses import recipient_signals, sender_signals
from popproxy.scan.content import obfuscation_signals
from popproxy.scan.header_facts import HeaderFacts
from popproxy.scan.lures import lure_signals
from popproxy.scan.settings import DEFAULT_PROTECTED_BRANDS
from popproxy.scan.verdict import Signal


def _sender(from_: str, reply_to: str = "") -> set[str]:
    return {s.name for s in sender_signals(
        HeaderFacts.parse(from_=from_, reply_to=reply_to), DEFAULT_PROTECTED_BRANDS
    )}


@pytest.mark.parametrize(
    ("from_", "reply_to", "expected"),
    [
        ('"PayPal" <service@paypal.com>', "", set()),
        ('"PayPal Service" <service@mailer.example.net>', "", {"sender-brand-mismatch"}),
        ("Microsoft Team <ms.team.1@gmail.com>", "", {"sender-brand-freemail"}),
        ("Microsoft account team ,_<no-reply@evil.test>", "", {"sender-brand-mismatch",
                                                               "sender-malformed"}),
        ("Prize Desk, winner <desk@example.net>", "", {"sender-malformed"}),
        ('"Doe, John" <john@example.org>', "", set()),
        ('"support@bank.example" <x@evil.test>', "", {"sender-display-address"}),
        ("Alice <alice@example.org>", "claims.dept@gmail.com", {"reply-to-freemail"}),
        ("Alice <alice@gmail.com>", "alice@gmail.com", set()),
        ("Pineapple Weekly <news@example.org>", "", set()),
    ],
)
def test_sender(from_: str, reply_to: str, expected: set[str]) -> None:
    assert _sender(from_, reply_to) == expected


def test_lures() -> None:
    text = "Your account has been suspended. Please verify your account. Payment failed."
    assert {s.name for s in lure_signals(text)} == {
        "lure-urgency",
        "lure-credentials",
        "lure-payment",
    }
    assert lure_signals("Minutes of the board meeting are attached.") == []


@pytest.mark.parametrize(
    ("text", "signal"),
    [
        ("Ihr Konto wurde gesperrt.", "lure-urgency"),
        ("Por favor, verifique sus datos.", "lure-credentials"),
        ("Parabéns, você ganhou!", "lure-prize"),
        ("Veuillez confirmez votre compte.", "lure-credentials"),
    ],
)
def test_localised_lures(text: str, signal: str) -> None:
    assert signal in {s.name for s in lure_signals(text)}


def test_subject_with_recipient_address() -> None:
    def signals(to: str, subject: str) -> list[Signal]:
        return recipient_signals(HeaderFacts.parse(to=to, subject=subject))

    assert signals("Bob <bob@example.net>", "bob@example.net: your parcel")
    assert not signals("Bob <bob@example.net>", "your parcel")
    assert not signals("a@example.net, b@example.net", "a@example.net")


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ("P\u0430yP\u0430l \u0430ccount s\u0435cure c\u043ede", "mixed-script-words"),
        ("ve\u200brify acc\u200bount pass\u200cword now", "invisible-chars"),
        ("e\u0337ntre\u0337ga pe\u0337ndente", "overlay-marks"),
    ],
)
def test_obfuscation(text: str, kind: str) -> None:
    got = obfuscation_signals(text, "")
    assert got and kind in got[0].detail


def test_real_languages_are_not_obfuscation() -> None:
    assert obfuscation_signals("Привет, как дела? Ελληνικά κείμενα. Grüße, ça va, niño", "") == []
    # Decomposed accents (NFD) compose under NFC and are not overlay marks.
    assert obfuscation_signals("Cafe\u0301 cre\u0300me brule\u0301e", "") == []
