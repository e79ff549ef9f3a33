"""Obfuscation tricks in text: each kind counted, one stray character forgiven."""

from __future__ import annotations

import pytest

from popproxy.scan.obfuscation import MIN_BODY_HITS, obfuscation_kinds

CYRILLIC_A = "\u0430"
ZWSP = "\u200b"
LONG_STROKE = "\u0336"


@pytest.mark.parametrize(("word", "kind"), [
    (f"P{CYRILLIC_A}yPal", "mixed-script-words"),
    (f"Pay{ZWSP}Pal", "invisible-chars"),
    (f"Pa{LONG_STROKE}yPal", "overlay-marks"),
    ("\U0001d40f\U0001d41a\U0001d432", "styled-letters"),  # mathematical bold "Pay"
])
def test_each_kind_needs_the_minimum_number_of_hits(word: str, kind: str) -> None:
    assert obfuscation_kinds(" ".join([word] * MIN_BODY_HITS), MIN_BODY_HITS) == [kind]
    assert obfuscation_kinds(" ".join([word] * (MIN_BODY_HITS - 1)), MIN_BODY_HITS) == []


@pytest.mark.parametrize("text", [
    "Plain ASCII text, nothing to see.",
    "Grüße aus München, señor, ça va, Ørsted " * 3,  # real accents compose under NFC
    "Добрый день, привет мир " * 3,  # one script per word
    "Auto\u00admo\u00adbile Auto\u00admo\u00adbile Auto\u00admo\u00adbile",  # soft hyphens
])
def test_honest_text_in_any_language_is_not_obfuscation(text: str) -> None:
    assert obfuscation_kinds(text, 1) == []


def test_kinds_are_reported_together() -> None:
    text = f"P{CYRILLIC_A}yPal Pay{ZWSP}Pal"
    assert obfuscation_kinds(text, 1) == ["mixed-script-words", "invisible-chars"]
