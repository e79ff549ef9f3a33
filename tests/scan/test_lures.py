"""The lure table: every pattern is reachable through its category's hints.

A pattern is only tried when the text holds one of its category's hints, so a hint that not
every match contains makes part of the pattern dead: the hint "update your" skipped "update",
a line break, "your billing", which the payment pattern matches.  Here, every pattern generates
the texts it matches (every alternative, each character class's letters, optional parts with
and without), with the whitespace between words written four ways, and each must raise its
lure.
"""

from __future__ import annotations

import importlib
import itertools
import re
from collections.abc import Iterator
from typing import Any

import pytest

from popproxy.scan.lures import LURES, Lure, lure_signals, spaced

# The stdlib's own regex parser (no type stubs): the texts are derived from parsed patterns.
sre: Any = importlib.import_module("re._constants")
sre_parse: Any = importlib.import_module("re._parser")

# The whitespace between two words, as mail text has it: folded lines, CRLF, tabs.
_GAPS = (" ", "\n", "\r\n", " \t")
# Texts one top-level alternative may expand to before only a covering set is generated
# (each choice at least once, the others at their first choice).
_MAX_PRODUCT = 5_000
# A stand-in for a character class that is not a short list of letters (``\w``, ``[^.!?\n]``).
_CANDIDATES = " a1.-"


def _in_class(ch: str, items: list[tuple[Any, Any]]) -> bool:
    hit, negate = False, False
    for op, av in items:
        if op is sre.NEGATE:
            negate = True
        elif op is sre.LITERAL:
            hit |= ord(ch) == av
        elif op is sre.RANGE:
            hit |= av[0] <= ord(ch) <= av[1]
        elif op is sre.CATEGORY:
            name = str(av)
            found = ch.isdigit() if "DIGIT" in name else ch.isspace() if "SPACE" in name else (
                ch.isalnum() or ch == "_"
            )
            hit |= found != ("NOT" in name)
    return hit != negate


def _is_space_class(op: Any, av: Any) -> bool:
    return op is sre.IN and len(av) == 1 and av[0] == (sre.CATEGORY, sre.CATEGORY_SPACE)


def _class_choices(items: list[tuple[Any, Any]]) -> list[str]:
    """Each letter of a plain class (``[ée]``), else one character the class matches."""
    if all(op is sre.LITERAL for op, _ in items):
        return [chr(av) for _, av in items]
    return [next(ch for ch in _CANDIDATES if _in_class(ch, items))]


def _repeat_choices(av: Any, gap: str) -> list[str]:
    low, high, body = av
    if len(body) == 1 and _is_space_class(*body[0]):
        spaces = [gap if high >= len(gap) else gap[:high]]
        return ([""] if low == 0 else []) + spaces
    once = _expand(body, gap)
    texts = ["".join(reps) for reps in itertools.product(once, repeat=max(low, 1))]
    return ([""] if low == 0 else []) + texts


def _choices(op: Any, av: Any, gap: str) -> list[str]:
    """The texts one parsed element matches (``gap``: what whitespace classes match)."""
    if op is sre.LITERAL:
        return [chr(av)]
    if op is sre.NOT_LITERAL or op is sre.ANY:
        return ["b" if av == ord("a") else "a"]
    if _is_space_class(op, av):
        return [gap[0]]
    if op is sre.IN:
        return _class_choices(av)
    if op is sre.BRANCH:
        return [text for alternative in av[1] for text in _expand(alternative, gap)]
    if op is sre.SUBPATTERN:
        return _expand(av[3], gap)
    if op is sre.ATOMIC_GROUP:
        return _expand(av, gap)
    if op in (sre.MAX_REPEAT, sre.MIN_REPEAT, sre.POSSESSIVE_REPEAT):
        return _repeat_choices(av, gap)
    return [""]  # \b, look-arounds: they match no text of their own


def _expand(items: Any, gap: str) -> list[str]:
    """The texts a parsed sequence matches: every combination, or a covering set if too many."""
    options = [_choices(op, av, gap) for op, av in items]
    size = 1
    for choices in options:
        size *= len(choices)
    if size <= _MAX_PRODUCT:
        return ["".join(combo) for combo in itertools.product(*options)]
    firsts = [choices[0] for choices in options]
    covering = {
        "".join([*firsts[:i], choice, *firsts[i + 1 :]])
        for i, choices in enumerate(options)
        for choice in choices
    }
    return sorted(covering)


def matched_texts(pattern: re.Pattern[str]) -> dict[tuple[int, str], list[str]]:
    """Texts ``pattern`` matches, by (top-level alternative, gap).

    A generated text that the pattern does not match (an optional part left out between two
    ``\b``) is dropped; the test checks that each alternative keeps some texts.
    """
    parsed = list(sre_parse.parse(pattern.pattern, pattern.flags & ~re.UNICODE))
    alternatives = [parsed]
    # The parser moves a prefix common to all alternatives (the leading ``\b``) out of them.
    if parsed and parsed[-1][0] is sre.BRANCH:
        alternatives = [[*parsed[:-1], *alt] for alt in parsed[-1][1][1]]
    out: dict[tuple[int, str], list[str]] = {}
    for index, alternative in enumerate(alternatives):
        for gap in _GAPS:
            texts = (f"hello {text} there" for text in dict.fromkeys(_expand(alternative, gap)))
            out[index, gap] = [text for text in texts if pattern.search(text)]
    return out


def _cases() -> Iterator[tuple[Lure, int]]:
    for lure in LURES:
        for index in range(len(lure.patterns)):
            yield lure, index


@pytest.mark.parametrize(
    ("lure", "index"), list(_cases()), ids=[f"{lu.name}[{i}]" for lu, i in _cases()]
)
def test_every_pattern_is_reachable_through_its_hints(lure: Lure, index: int) -> None:
    by_alternative = matched_texts(lure.patterns[index])
    # The generator reaches every alternative of the pattern, with every gap.
    assert [key for key, texts in by_alternative.items() if not texts] == []
    texts = [text for group in by_alternative.values() for text in group]
    skipped = [text for text in texts if not lure.hinted(spaced(text.lower()))]
    assert skipped == []
    unraised = [text for text in texts if lure.name not in {s.name for s in lure_signals(text)}]
    assert unraised == []


def test_the_generator_covers_every_alternative_and_gap() -> None:
    found = matched_texts(re.compile(r"\bupdate\s+your\s+(?:billing|card)|\bf[ée]e\b"))
    assert sorted(found) == sorted((i, gap) for i in (0, 1) for gap in _GAPS)
    assert "hello update\nyour\nbilling there" in found[0, "\n"]
    assert "hello update\r\nyour\r\ncard there" in found[0, "\r\n"]
    assert set(found[1, " "]) == {"hello fee there", "hello fée there"}


@pytest.mark.parametrize(
    ("text", "signal"),
    [
        # Issue 16: the hint "update your" skipped a line break between the two words.
        ("Please update\nyour billing details today.", "lure-payment"),
        ("Claim\r\nyour reward now", "lure-payment"),
        ("You\nhave won a car", "lure-prize"),
        ("We are the next\tof kin", "lure-advance-fee"),
        ("Vérifiez votre compte", "lure-credentials"),
    ],
)
def test_words_split_by_any_whitespace_still_raise_the_lure(text: str, signal: str) -> None:
    assert signal in {s.name for s in lure_signals(text)}


@pytest.mark.parametrize("hint", ["update\nyour", "update  your", " update", "Update", ""])
def test_a_hint_must_be_lower_case_and_single_spaced(hint: str) -> None:
    with pytest.raises(ValueError, match="single-spaced"):
        Lure("lure-x", (hint,), (re.compile("update"),))


def test_hints_are_checked_with_whitespace_runs_as_one_space() -> None:
    assert spaced("update \r\n\t your\u00a0billing") == "update your billing"
    payment = next(lure for lure in LURES if lure.name == "lure-payment")
    assert payment.hinted(spaced("update\nyour billing"))
    assert not payment.hinted("update\nyour billing")  # what the old check saw


def test_the_table_names_each_category_once_with_hints_and_patterns() -> None:
    names = [lure.name for lure in LURES]
    assert len(names) == len(set(names)) == 7
    assert all(lure.hints and lure.patterns for lure in LURES)
