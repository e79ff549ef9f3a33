"""Text written to fool filters but not readers: homoglyph words, invisible and overlay marks.

Legitimate text in any language keeps one script per word.  A Latin word with a Cyrillic
"\u0430" or Greek "\u03bf" inside, letters split by zero-width characters, or letters struck
through with combining overlays exist to break keyword matching while still reading normally.
"""

from __future__ import annotations

import re
import unicodedata

# A Latin letter next to a Greek or Cyrillic letter inside one word.
_MIXED_WORD = re.compile(
    r"[A-Za-z][\u0370-\u03ff\u0400-\u04ff\u0500-\u052f]|[\u0370-\u03ff\u0400-\u052f][A-Za-z]"
)
# Zero-width characters between two Latin letters.  U+00AD (soft hyphen) is left out on purpose:
# newsletters use &shy; to hyphenate long words.
_INVISIBLE_IN_WORD = re.compile(r"[A-Za-z][\u200b\u200c\u200d\u2060\ufeff]+[A-Za-z]")
# Combining marks still attached to a Latin letter after NFC: NFC composes every real accented
# letter (é, ñ, ø), so what stays is decoration such as U+0337 "e̷".
_COMBINING_ON_LATIN = re.compile(r"[A-Za-z][\u0300-\u036f\u1ab0-\u1aff\u20d0-\u20ff]")
# Mathematical alphanumeric symbols (U+1D400 block: bold or script "PayPal"), styled letters
# that keyword filters do not see.
_MATH_LETTERS = re.compile(r"[\U0001d400-\U0001d7ff]{3,}")

# Occurrences needed in a body: one stray character can be a typo or a copy-paste accident.
MIN_BODY_HITS = 3


def obfuscation_kinds(text: str, min_hits: int) -> list[str]:
    """Which obfuscation tricks occur at least ``min_hits`` times in ``text``."""
    found: list[str] = []
    if text.isascii():  # every trick here needs a non-ASCII character
        return found
    if len(_MIXED_WORD.findall(text)) >= min_hits:
        found.append("mixed-script-words")
    if len(_INVISIBLE_IN_WORD.findall(text)) >= min_hits:
        found.append("invisible-chars")
    if len(_COMBINING_ON_LATIN.findall(unicodedata.normalize("NFC", text))) >= min_hits:
        found.append("overlay-marks")
    if len(_MATH_LETTERS.findall(text)) >= min_hits:
        found.append("styled-letters")
    return found
