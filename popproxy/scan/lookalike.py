"""Look-alike host names: mixed scripts, homoglyphs and typos of protected brands.

Homoglyph data and script names come from ``confusable_homoglyphs`` (Unicode's confusables.txt
and Scripts.txt); the mixed-script rule follows UTS 39's "Highly Restrictive" profile.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

from confusable_homoglyphs import categories, confusables  # type: ignore[import-untyped]

from popproxy.scan import hosts
from popproxy.scan.settings import ProtectedBrand

# UTS 39 section 5.2 "Highly Restrictive": a label may mix Latin only with these CJK sets.
_ALLOWED_SCRIPT_SETS = (
    frozenset({"LATIN", "HAN", "HIRAGANA", "KATAKANA"}),
    frozenset({"LATIN", "HAN", "BOPOMOFO"}),
    frozenset({"LATIN", "HAN", "HANGUL"}),
)
_NEUTRAL_SCRIPTS = frozenset({"COMMON", "INHERITED"})

# ASCII look-alikes a reader's eye skips over (paypa1, rnicrosoft, g00gle).
_ASCII_TRICKS = (("rn", "m"), ("vv", "w"), ("0", "o"), ("1", "l"), ("3", "e"), ("5", "s"))

# Typos are only counted for brand names this long: a one-letter edit of a short name ("apple"
# -> "apply") is usually another real word.
_MIN_TYPO_LENGTH = 6

_CACHE_SIZE = 8192


@lru_cache(maxsize=4096)
def _latin_of(ch: str) -> str:
    if ch.isascii():
        return ch
    found = confusables.is_confusable(ch, preferred_aliases=["latin"])
    if found:
        for glyph in found[0]["homoglyphs"]:
            c = str(glyph["c"])
            if len(c) == 1 and c.isascii():
                return c.lower()
    return ch


@lru_cache(maxsize=_CACHE_SIZE)
def skeleton(label: str) -> str:
    """A label reduced to what it looks like in Latin letters.

    Cyrillic "\u0440aypa1" -> "paypal": homoglyphs mapped through Unicode confusables, then
    ASCII tricks (1 -> l, rn -> m).
    """
    out = "".join(_latin_of(ch) for ch in label.lower()).replace("-", "")
    for old, new in _ASCII_TRICKS:
        out = out.replace(old, new)
    return out


def latin_reading(word: str) -> str:
    """How a word of running text reads in Latin letters, lower-cased ("Meta\u041cask": metamask).

    Unlike :func:`skeleton` (for host labels, which are lower-case already) each character is
    mapped in its own case: Cyrillic "\u041c" looks like "M", its lower case "\u043c" like no
    Latin letter.
    """
    return "".join(_latin_of(ch) for ch in word).lower()


@lru_cache(maxsize=_CACHE_SIZE)
def mixed_script(label: str) -> bool:
    """True when a label mixes scripts beyond what UTS 39 "Highly Restrictive" allows."""
    if label.isascii():
        return False
    scripts = {str(categories.aliases_categories(ch)[0]) for ch in label}
    scripts -= _NEUTRAL_SCRIPTS
    if len(scripts) <= 1:
        return False
    return not any(scripts <= allowed for allowed in _ALLOWED_SCRIPT_SETS)


def _within_one_edit(a: str, b: str) -> bool:
    if a == b:
        return True
    if abs(len(a) - len(b)) > 1:
        return False
    if len(a) == len(b):
        diffs = [i for i in range(len(a)) if a[i] != b[i]]
        if len(diffs) == 1:
            return True
        i = diffs[0]
        return len(diffs) == 2 and diffs[1] == i + 1 and a[i] == b[i + 1] and a[i + 1] == b[i]
    short, long_ = (a, b) if len(a) < len(b) else (b, a)
    return any(long_[:i] + long_[i + 1 :] == short for i in range(len(long_)))


def _typo_of(skel: str, name: str) -> bool:
    # Same first letter required: "finance" is one edit from "binance" but is a word, whereas
    # typo-squats keep the brand's first letter so the name still "reads" right at a glance.
    return (
        len(name) >= _MIN_TYPO_LENGTH
        and skel != name
        and skel[:1] == name[:1]
        and _within_one_edit(skel, name)
    )


def is_official(host: str, brand: ProtectedBrand) -> bool:
    """True when ``host`` (ASCII) belongs to the brand: brand.<any suffix> or a listed domain."""
    if hosts.owner_label(host) == brand.name:
        return True
    return any(host == d or host.endswith("." + d) for d in brand.domains)


@dataclass(frozen=True, slots=True)
class BrandMatch:
    """A host that imitates a brand: ``kind`` is "lookalike" or "in-host"."""

    brand: str
    kind: str


@lru_cache(maxsize=_CACHE_SIZE)
def brand_match(
    host: str, display_host: str, brands: tuple[ProtectedBrand, ...]
) -> BrandMatch | None:
    """Check a link host against the protected brands.

    "lookalike": a label whose skeleton is the brand or one typo away (p\u0430ypal.example,
    paypa1.example, amazom.example).  "in-host": the brand name starts a label of a host the
    brand does not own (paypal.com.verify.example, appleid-support.example).
    """
    labels = display_host.split(".")
    for brand in brands:
        if is_official(host, brand):
            continue
        for label in labels:
            skel = skeleton(label)
            if skel == brand.name and label != brand.name:
                return BrandMatch(brand.name, "lookalike")
            if _typo_of(skel, brand.name):
                return BrandMatch(brand.name, "lookalike")
        if any(_brand_pattern(w).search(host) for w in _host_words(brand)):
            return BrandMatch(brand.name, "in-host")
    return None


def _host_words(brand: ProtectedBrand) -> tuple[str, ...]:
    return (brand.name, *(a for a in brand.aliases if " " not in a))


@lru_cache(maxsize=256)
def _brand_pattern(word: str) -> re.Pattern[str]:
    # The brand as a whole token of the host: "paypal-login", "apple.id", "secure1paypal"
    # match; "applecore" and "pineapple" do not.
    return re.compile(r"(?:^|[.\-_\d])" + re.escape(word) + r"(?:$|[.\-_\d])")


@lru_cache(maxsize=16)
def _names_pattern(
    brands: tuple[ProtectedBrand, ...],
) -> tuple[re.Pattern[str], dict[str, int]]:
    # One alternation for the whole list (one pass over the text instead of one per brand),
    # and the index of the first brand each word belongs to.
    index: dict[str, int] = {}
    for i, brand in enumerate(brands):
        for word in (brand.name, *brand.aliases):
            index.setdefault(word.lower(), i)
    words = "|".join(re.escape(w) for w in sorted(index, key=len, reverse=True))
    return re.compile(r"(?i)(?<![^\W_])(?:" + words + r")(?![^\W_])"), index


def names_brand(text: str, brands: tuple[ProtectedBrand, ...]) -> ProtectedBrand | None:
    """The first protected brand (in list order) named as a whole word in ``text``."""
    if not brands:
        return None
    pattern, index = _names_pattern(brands)
    found = [index.get(m.group(0).lower(), -1) for m in pattern.finditer(text)]
    found = [i for i in found if i >= 0]
    return brands[min(found)] if found else None
