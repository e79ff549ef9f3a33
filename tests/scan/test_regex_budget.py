"""Every regular expression under popproxy/scan runs in linear time on hostile input.

A pattern with super-linear backtracking on attacker text froze the proxy for 22 s (issue 14).
The audit is automatic: every module of ``popproxy.scan`` is imported and every module-level
compiled pattern (also inside dicts, tuples and lists) is collected, so a pattern added later is
audited too; patterns built at run time from data are listed in ``_BUILT``.

Each pattern runs (``finditer`` to the end, which is also what a failing ``search`` costs) on
~100 KB inputs made of its own pieces (each prefix of the pattern repeated, each prefix followed
by a long run of what one of its repetitions eats, each alternative repeated) and on generic
hostile inputs (``"<a " * N``, unclosed quotes, long runs of spaces, word characters, dots...).
The time must stay within ``_LINEAR_FACTOR`` times a linear scan of the same input plus
``_SLACK_SECONDS``: a linear pattern needs milliseconds here, a quadratic one minutes.
The measurement runs in a child process so that a pattern that never finishes fails the test
(after ``_HANG_SECONDS``) instead of hanging it.
"""

from __future__ import annotations

import dataclasses
import importlib
import multiprocessing
import pkgutil
import re
import time
from collections.abc import Iterator
from multiprocessing.connection import Connection
from typing import Any

import popproxy.scan
from popproxy.scan import addresses, content, lookalike, lures
from popproxy.scan.headers import _HEADER_LINE
from popproxy.scan.pdf import raw_uri_links
from popproxy.scan.settings import DEFAULT_PROTECTED_BRANDS

# The stdlib's own regex parser (no type stubs): the audit derives inputs from parsed patterns.
sre: Any = importlib.import_module("re._constants")
sre_parse: Any = importlib.import_module("re._parser")

# Input size: what the attack used (a 100 KB message).
_SIZE = 100_000
# A linear pattern costs at most this many times a linear scan of the same input (one regex
# step per character, ``(?s).``, measured on this machine: ~0.2-0.4 us), plus the slack (a busy
# CI machine).  The heaviest linear patterns here (alternations of dozens of phrases) need ~1 us
# per character, ~0.1 s on 100 KB, against an allowance of ~0.3-0.5 s; quadratic backtracking
# on 100 KB costs seconds to hours.
_LINEAR_FACTOR = 10
_SLACK_SECONDS = 0.1
# A case still running after this long has failed (the child process is killed).
_HANG_SECONDS = 10.0
# Inputs derived from one pattern, at most (alternations with hundreds of words).
_MAX_DERIVED = 16

_GENERIC_PIECES = (
    "<a ", "<a", "</", "<!--", "--", "http://", "www.", "[.]", "=?utf-8?q?", "/URI(", "From ",
    "a:", "a@", "@a.", "a.", "a-", "a ", "a", " ", "\r\n", "1.", "%41", "\\", '"', "'", "=",
    "&amp;", "dear ", "\u0430a", "a\u200b", "a\u0301", "\U0001d400",
)


def _generic_inputs() -> dict[str, str]:
    out: dict[str, str] = {}
    for piece in _GENERIC_PIECES:
        out[f"{piece!r}*N"] = _repeat(piece)
    out["'<a'+'b'*N"] = "<a" + "b" * _SIZE
    out["'<a href=\"'+'a'*N"] = '<a href="' + "a" * _SIZE
    out["'\"'+'a '*N"] = '"' + "a " * (_SIZE // 2)
    out["\"'\"+'a'*N"] = "'" + "a" * _SIZE
    out["'a'*N+'@'"] = "a" * _SIZE + "@"
    out["'a.'*N+'@'"] = "a." * (_SIZE // 2) + "@"
    out["'http://'+'a'*N"] = "http://" + "a" * _SIZE
    return out


def _repeat(piece: str, size: int = _SIZE) -> str:
    return piece * max(1, size // max(len(piece), 1))


# --- collecting the patterns ------------------------------------------------------------------


def _patterns_in(value: object) -> Iterator[tuple[str, re.Pattern[Any]]]:
    if isinstance(value, re.Pattern):
        yield "", value
    elif isinstance(value, dict):
        for key, item in value.items():
            if isinstance(item, re.Pattern):
                yield f"[{key!r}]", item
    elif isinstance(value, (tuple, list, frozenset, set)):
        for i, item in enumerate(value):
            if isinstance(item, re.Pattern):
                yield f"[{i}]", item
            elif dataclasses.is_dataclass(item) and not isinstance(item, type):
                yield from _patterns_of_record(item, getattr(item, "name", i))


def _patterns_of_record(record: Any, key: object) -> Iterator[tuple[str, re.Pattern[Any]]]:
    """The patterns in a table row's fields (lures.LURES: ``Lure(name, hints, patterns)``)."""
    for item in dataclasses.fields(record):
        value = getattr(record, item.name)
        if isinstance(value, re.Pattern):
            yield f"[{key!r}].{item.name}", value
        elif isinstance(value, tuple):
            for j, pattern in enumerate(value):
                if isinstance(pattern, re.Pattern):
                    yield f"[{key!r}].{item.name}[{j}]", pattern


def _module_patterns() -> dict[str, re.Pattern[Any]]:
    out: dict[str, re.Pattern[Any]] = {}
    for info in pkgutil.iter_modules(popproxy.scan.__path__):
        module = importlib.import_module(f"popproxy.scan.{info.name}")
        for name, value in vars(module).items():
            for suffix, pattern in _patterns_in(value):
                out[f"{info.name}.{name}{suffix}"] = pattern
    return out


# Patterns built at run time from data (brand names, the recipient's address).
_BUILT: dict[str, re.Pattern[Any]] = {
    "lookalike._brand_pattern('paypal')": lookalike._brand_pattern("paypal"),
    "lookalike._names_pattern(default brands)": lookalike._names_pattern(
        DEFAULT_PROTECTED_BRANDS
    )[0],
    "content._own_greeting('jo@example.org')": content._own_greeting("jo@example.org"),
}


# Patterns only ever used with ``match`` at positions the caller then moves past (each input
# position is tried once at most), so they are timed with one ``match`` at the start of the
# input: that attempt must be linear, ``search`` need not be.
_MATCH_ONLY = frozenset({
    "sniff._PAGE_START",  # sniff: one match at the start of an attachment
})


def all_patterns() -> dict[str, re.Pattern[Any]]:
    """Every pattern the audit covers, by a readable name."""
    return {**_module_patterns(), **_BUILT}


# --- inputs made of a pattern's own pieces ----------------------------------------------------

_CANDIDATES = "a1 .-_@/:<>\"'=?x\t\nZ\u00e9\u0430%\\[]()#&;,!*+~$"


def _in_class(ch: str, items: list[tuple[Any, Any]]) -> bool:
    code = ord(ch)
    negate = False
    hit = False
    for op, av in items:
        if op is sre.NEGATE:
            negate = True
        elif op is sre.LITERAL:
            hit |= code == av
        elif op is sre.RANGE:
            hit |= av[0] <= code <= av[1]
        elif op is sre.CATEGORY:
            hit |= _in_category(ch, av)
    return hit != negate


def _in_category(ch: str, category: Any) -> bool:
    name = str(category)
    if "DIGIT" in name:
        found = ch.isdigit()
    elif "SPACE" in name:
        found = ch.isspace()
    elif "WORD" in name:
        found = ch.isalnum() or ch == "_"
    else:
        found = ch in "\n"
    return found != ("NOT" in name)


def _char_for(items: list[tuple[Any, Any]]) -> str:
    return next((ch for ch in _CANDIDATES if _in_class(ch, items)), "")


def _sample(items: Any, least: bool = False) -> str:
    """A short string matching the parsed sequence: first alternatives, and each repetition
    once (``least``: as few times as allowed, so optional parts are left out)."""
    out = []
    for op, av in items:
        if op is sre.LITERAL:
            out.append(chr(av))
        elif op is sre.NOT_LITERAL:
            out.append("a" if av != ord("a") else "b")
        elif op is sre.ANY:
            out.append("a")
        elif op is sre.IN:
            out.append(_char_for(av))
        elif op is sre.BRANCH:
            out.append(_sample(av[1][0], least))
        elif op is sre.SUBPATTERN:
            out.append(_sample(av[3], least))
        elif op is sre.ATOMIC_GROUP:
            out.append(_sample(av, least))
        elif op in (sre.MAX_REPEAT, sre.MIN_REPEAT, sre.POSSESSIVE_REPEAT):
            out.append(_sample(av[2], least) * (av[0] if least else max(av[0], 1)))
    return "".join(out)


def _parts(items: Any) -> Iterator[tuple[str, Any]]:
    """Every repetition body and alternative in the parsed tree, depth first."""
    for op, av in items:
        if op is sre.BRANCH:
            for alternative in av[1]:
                yield "alt", alternative
                yield from _parts(alternative)
        elif op is sre.SUBPATTERN:
            yield from _parts(av[3])
        elif op is sre.ATOMIC_GROUP:
            yield from _parts(av)
        elif op in (sre.ASSERT, sre.ASSERT_NOT):
            yield from _parts(av[1])
        elif op in (sre.MAX_REPEAT, sre.MIN_REPEAT, sre.POSSESSIVE_REPEAT):
            yield "body", av[2]
            yield from _parts(av[2])


def derived_inputs(pattern: re.Pattern[Any]) -> dict[str, str]:
    """Hostile inputs made of the pattern's own pieces."""
    source = pattern.pattern
    if isinstance(source, bytes):
        source = source.decode("latin-1")
    items = list(sre_parse.parse(source, pattern.flags & ~re.ASCII & ~re.LOCALE))
    top = items
    if len(items) == 1 and items[0][0] is sre.SUBPATTERN:
        top = list(items[0][1][3])
    bodies = [s for kind, part in _parts(top) if kind == "body" and (s := _sample(part))]
    alternatives = [s for kind, part in _parts(top) if kind == "alt" and (s := _sample(part))]
    out: dict[str, str] = {}
    prefixes = {_sample(top[:k], least) for k in range(1, len(top) + 1) for least in (False, True)}
    for i, prefix in enumerate(sorted(prefixes - {""}, key=len)):
        out[f"prefix{i}*N"] = _repeat(prefix)
        for j, body in enumerate(bodies[:3]):
            out[f"prefix{i}+body{j}*N"] = prefix + _repeat(body)
    for i, alternative in enumerate(alternatives[:6]):
        out[f"alt{i}*N"] = _repeat(alternative)
    for i, body in enumerate(bodies[:3]):
        out[f"body{i}*N"] = _repeat(body)
    # Repeated prefixes first: they hold the classic "every position starts a long scan" case.
    ranked = sorted(out.items(), key=lambda item: "+" in item[0])
    return dict(ranked[:_MAX_DERIVED])


# --- timing -------------------------------------------------------------------------------------


_STEP = re.compile(r"(?s).")


def _seconds_per_char() -> float:
    """This machine's speed: one regex step per character (``(?s).`` over mixed text)."""
    sample = "a b\u0430<1." * (_SIZE // 8)
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        for _ in _STEP.finditer(sample):
            pass
        best = min(best, time.perf_counter() - start)
    return best / len(sample)


_PER_CHAR: list[float] = []


def _cost(pattern: re.Pattern[Any], text: str, match_only: bool = False) -> tuple[float, float]:
    """(seconds the pattern needs on ``text``, the allowed seconds)."""
    if not _PER_CHAR:
        _PER_CHAR.append(_seconds_per_char())
    linear = _PER_CHAR[0] * len(text)
    subject: str | bytes = text
    if isinstance(pattern.pattern, bytes):
        subject = text.encode("utf-8")
    start = time.perf_counter()
    if match_only:
        pattern.match(subject)
    else:
        for _ in pattern.finditer(subject):
            pass
    spent = time.perf_counter() - start
    return spent, _LINEAR_FACTOR * linear + _SLACK_SECONDS


def _cases(
    patterns: dict[str, re.Pattern[Any]],
) -> Iterator[tuple[str, str, re.Pattern[Any], str, bool]]:
    generic = _generic_inputs()
    for name, pattern in patterns.items():
        for label, text in {**generic, **derived_inputs(pattern)}.items():
            yield name, label, pattern, text, name in _MATCH_ONLY


def _measure(
    patterns: dict[str, re.Pattern[Any]], skip: int, failed: set[str], out: Connection
) -> None:
    """Time every case from number ``skip`` on; one failure per pattern is enough."""
    for index, (name, label, pattern, text, match_only) in enumerate(_cases(patterns)):
        if index < skip or name in failed:
            continue
        out.send(("start", index, name, label, 0.0, 0.0))
        spent, allowed = _cost(pattern, text, match_only)
        if spent > allowed:  # a second try, in case the machine was busy for a moment
            spent, allowed = min((spent, allowed), _cost(pattern, text, match_only))
        if spent > allowed:
            failed.add(name)
        out.send(("done", index, name, label, spent, allowed))
    out.send(("end", -1, "", "", 0.0, 0.0))


def over_budget(patterns: dict[str, re.Pattern[Any]]) -> list[str]:
    """The cases over their time budget (or still running after _HANG_SECONDS).

    The cases run in a child process; one that hangs is killed and reported, and a new child
    goes on with the next pattern.
    """
    ctx = multiprocessing.get_context("fork")
    slow: list[str] = []
    failed: set[str] = set()
    skip = 0
    while skip >= 0:
        receive, send = ctx.Pipe(duplex=False)
        child = ctx.Process(target=_measure, args=(patterns, skip, failed, send), daemon=True)
        child.start()
        send.close()
        skip = _collect(receive, slow, failed)
        child.kill()
        child.join()
        receive.close()
    return slow


def _collect(results: Connection, slow: list[str], failed: set[str]) -> int:
    """Read one child's results; the case to resume at, or -1 when all ran."""
    current, name, label = 0, "", ""
    while True:
        if not results.poll(_HANG_SECONDS):
            slow.append(f"{name} on {label}: still running after {_HANG_SECONDS:g} s")
            failed.add(name)
            return current + 1
        try:
            kind, current, name, label, spent, allowed = results.recv()
        except EOFError:
            slow.append(f"{name} on {label}: the measuring process died")
            failed.add(name)
            return current + 1
        if kind == "end":
            return -1
        if kind == "done" and spent > allowed:
            slow.append(f"{name} on {label}: {spent:.3f} s, allowed {allowed:.3f} s")


# --- the tests ----------------------------------------------------------------------------------


def test_every_scan_regex_is_linear_on_hostile_input() -> None:
    patterns = all_patterns()
    assert len(patterns) >= 40  # the audit really found the patterns of popproxy/scan
    assert over_budget(patterns) == []


def test_the_audit_finds_module_patterns_and_derives_inputs() -> None:
    patterns = all_patterns()
    assert "extract._TEXT_URL" in patterns
    assert "lures.LURES['lure-urgency'].patterns[0]" in patterns
    assert "lures.LURES['lure-urgency'].patterns[1]" in patterns
    inputs = derived_inputs(re.compile(r"<(/?)([a-z]+)\b(?:[^>\"']|\"[^\"]*\")*>"))
    assert any(text.startswith("<a") for text in inputs.values())
    assert all(len(text) >= _SIZE - 20 for text in inputs.values())


# defang.py's tag pattern before issue 14, quadratic on "<a " * 24000 (72 KB): every "<" starts
# a scan to the end of the input.  That input costs it ~35 s here, so the check uses a third of
# it (~4 s, 1/9 of the time), still an order of magnitude over the allowance.
_OLD_QUADRATIC_TAG = re.compile(r"<(/?)([a-zA-Z][a-zA-Z0-9]*)\b(?:[^>\"']|\"[^\"]*\"|'[^']*')*>")


def test_the_budget_catches_the_old_quadratic_tag_pattern() -> None:
    spent, allowed = _cost(_OLD_QUADRATIC_TAG, "<a " * 8000)
    assert spent > 5 * allowed
    # ... and the audit's own inputs hold that attack, generic and derived from the pattern.
    assert "<a " * 24000 in _generic_inputs()["'<a '*N"]
    assert any(text.startswith("<a<a") for text in derived_inputs(_OLD_QUADRATIC_TAG).values())


def test_the_budget_passes_a_linear_pattern() -> None:
    assert over_budget({"linear": re.compile(r"<(/?)([a-zA-Z][a-zA-Z0-9]*+)[^<>]*+>")}) == []


def test_patterns_made_linear_still_find_what_they_found() -> None:
    shown = addresses._SHOWN_ADDRESS.search('"support@bank.example" via x')
    assert shown is not None
    assert shown.group(1) == "bank.example"
    assert addresses._SHOWN_ADDRESS.search("a.b+c@mail.bank.example") is not None
    fee = next(lure for lure in lures.LURES if lure.name == "lure-advance-fee")
    for text in ("4.5 million united states dollars", "us$18.5 million", "a sum of $2,5 million"):
        assert fee.patterns[0].search(text) is not None, text
    links = raw_uri_links(b"<</URI (http://198.51.100.7/x) >> /URI(https://evil.test/p(1))")
    assert [link.url for link in links] == ["http://198.51.100.7/x", "https://evil.test/p"]
    assert _HEADER_LINE.match(b"Subject: x") is not None
    assert _HEADER_LINE.match(b" folded") is not None
    assert _HEADER_LINE.match(b"no colon here") is None
