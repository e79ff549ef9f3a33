"""Wording rules that are not lure phrases: a greeting to a bare address, obfuscated text.

The lure phrases are in :mod:`.lures`; the address headers' rules in :mod:`.addresses`.
"""

from __future__ import annotations

import re
from functools import lru_cache

from popproxy.scan.header_facts import NO_HEADERS, HeaderFacts
from popproxy.scan.lookalike import latin_reading, names_brand
from popproxy.scan.obfuscation import MIN_BODY_HITS, obfuscation_kinds
from popproxy.scan.settings import ProtectedBrand
from popproxy.scan.verdict import Signal, clean_detail
from popproxy.scan.weights import weight


def _sig(name: str, detail: str) -> Signal:
    return Signal(name=name, weight=weight(name), detail=clean_detail(detail))


# A greeting addressed to a bare e-mail address ("Dear jo@example.org,"): bulk phishing knows
# only the address it was sent to, while people and real services greet by name.
_GREETING = (
    r"\b(?:dear|hello|hi|hey|greetings|attention|attn|oi|ol[áa]|hola|estimad[oa]|prezad[oa]|"
    r"car[oa]|bonjour|cher|ch[èe]re|hallo|guten\s+tag|liebe[r]?|sehr\s+geehrte[r]?)\b[\s,:(]{1,4}"
)
_GREETING_ADDRESS = re.compile(_GREETING + r"[\w.+-]+@[a-z0-9-]+(?:\.[a-z0-9-]+)*\.[a-z]{2,24}\b")
_GREETING_HINT = re.compile(r"@[a-z0-9-]+\.")
# The greeting sits at the top: only the first characters of the text are searched.
_GREETING_WINDOW = 3000
# Recipient addresses whose greeting pattern is kept: a proxy serves a few mailboxes.
_GREETING_CACHE = 64


def greeting_signals(visible: str, headers: HeaderFacts = NO_HEADERS) -> list[Signal]:
    """greeting-address: the text greets the reader by a bare e-mail address.

    Any address with a domain counts, and so does the recipient's own address as written in
    To (whatever its form; ``headers.to_boxes``), since that is the one thing a bulk sender
    knows about the reader.
    """
    head = visible[:_GREETING_WINDOW].lower()
    if "@" not in head:
        return []
    if _GREETING_HINT.search(head) and _GREETING_ADDRESS.search(head):
        return [_sig("greeting-address", "")]
    boxes = [a.lower() for _, a in headers.to_boxes if "@" in a]
    if len(boxes) == 1 and boxes[0] in head and _own_greeting(boxes[0]).search(head):
        return [_sig("greeting-address", "recipient")]
    return []


@lru_cache(maxsize=_GREETING_CACHE)
def _own_greeting(address: str) -> re.Pattern[str]:
    """A greeting to exactly ``address`` (not to a longer address that starts with it)."""
    return re.compile(_GREETING + re.escape(address) + r"(?![\w.-]*\w)")


# Mixed-script words the From and Subject need: one is a keyboard-layout slip (a Cyrillic
# "\u0421" typed for "C" on the same key: "\u0421reate fpga image" from a Russian speaker), while
# homoglyph lures swap letters in several words or several letters of one - or spell a brand's
# name with one ("Meta\u041cask"), which counts alone.
_MIN_HEADLINE_MIXED = 2
_MIXED = "mixed-script-words"
_WORD = re.compile(r"[^\W\d_]+")


def obfuscation_signals(
    visible: str, headline: str, brands: tuple[ProtectedBrand, ...] = ()
) -> list[Signal]:
    """text-obfuscated: homoglyph words, invisible or overlay characters in text or headers.

    Args:
        visible: the visible text.
        headline: From and Subject.
        brands: brands whose names spelt with one foreign letter count as one obfuscation.
    """
    kinds = obfuscation_kinds(visible, MIN_BODY_HITS)
    in_headline = obfuscation_kinds(headline, 1)
    if (
        _MIXED in in_headline
        and _MIXED not in obfuscation_kinds(headline, _MIN_HEADLINE_MIXED)
        and not _brand_homoglyph(headline, brands)
    ):
        in_headline.remove(_MIXED)
    kinds += [k for k in in_headline if k not in kinds]
    return [_sig("text-obfuscated", ",".join(kinds))] if kinds else []


def _brand_homoglyph(text: str, brands: tuple[ProtectedBrand, ...]) -> bool:
    """True when a mixed-script word of ``text`` reads as a brand's name ("Meta\u041cask")."""
    return any(
        not word.isascii()
        and obfuscation_kinds(word, 1)
        and names_brand(latin_reading(word), brands) is not None
        for word in _WORD.findall(text)
    )
