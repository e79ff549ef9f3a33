"""Wording and obfuscation signals (the sender signals are in test_addresses.py)."""

from __future__ import annotations

import pytest

from popproxy.scan.content import obfuscation_signals
from popproxy.scan.lures import lure_signals


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
