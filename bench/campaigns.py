"""Near-duplicate clustering of phishing into campaigns, for an honest time split.

Phishing arrives in campaigns of near-copies.  Two messages are put in one campaign when they
share any of these keys (union-find over the keys, so linear in the number of messages):

- the normalised subject (lower case, digits and hex runs as ``#``, ``re:``/``fwd:`` and
  punctuation dropped), alone when it is long (15+ characters: specific enough), else together
  with the sender's domain;
- the sender's domain together with the set of link hosts;
- one band of a MinHash signature of the body's word 4-shingles (one-permutation hashing:
  ``_BANDS`` bands of ``_ROWS`` rows; two bodies with Jaccard similarity 0.7 share a band with
  probability ~0.97, at 0.3 with ~0.05).

Used by bench/scan_quality.py (validation messages whose campaign started before the split are
set aside) and bench/train_scanner.py (cross-validation folds by campaign).  Text is read with
the standard library's parser and selectolax's HTML text: this is measurement, not the scanner.
"""

from __future__ import annotations

import email
import email.policy
import hashlib
import re
from collections.abc import Iterable, Sequence
from email.message import Message
from email.utils import getaddresses

from selectolax.lexbor import LexborHTMLParser

_BANDS = 16
_ROWS = 4
_BINS = _BANDS * _ROWS
_SHINGLE = 4
_MIN_SHINGLES = 8  # shorter bodies are too generic to join campaigns by text
_LONG_SUBJECT = 15
_MAX_BODY_CHARS = 20_000  # the head of a body names its campaign

_PREFIX = re.compile(r"^(?:\s*(?:re|fw|fwd|aw|wg|enc|res|rv|tr)\s*:\s*)+", re.I)
_NUMBERISH = re.compile(r"[0-9a-f]*[0-9][0-9a-f]*", re.I)
_NON_WORD = re.compile(r"[\W_]+")
_HOST = re.compile(r"(?i)https?://([a-z0-9.-]{3,253})")


def normalise_subject(subject: str) -> str:
    """Subject without reply prefixes, numbers, ids and punctuation."""
    text = _PREFIX.sub("", subject.strip().lower())
    text = _NUMBERISH.sub("#", text)
    return " ".join(_NON_WORD.sub(" ", text).split())


def _header(msg: Message, name: str) -> str:
    try:
        return str(msg.get(name, "") or "")
    except Exception:  # a header the parser cannot decode names no campaign
        return ""


def _body_text(msg: Message) -> str:
    chunks: list[str] = []
    for part in msg.walk():
        ctype = part.get_content_type()
        if ctype not in ("text/plain", "text/html"):
            continue
        payload = part.get_payload(decode=True)
        if not isinstance(payload, bytes):
            continue
        text = _decode(payload[: _MAX_BODY_CHARS * 2], part.get_content_charset())
        if ctype == "text/html":
            text = LexborHTMLParser(text).text(separator=" ") or ""
        chunks.append(text[:_MAX_BODY_CHARS])
    return " ".join(chunks)


def _decode(data: bytes, charset: str | None) -> str:
    try:
        return data.decode(charset or "latin-1", "replace")
    except (LookupError, ValueError):
        return data.decode("latin-1")


def _minhash(words: Sequence[str]) -> list[int] | None:
    """One-permutation MinHash of the word shingles; None when the body is too short."""
    if len(words) < _SHINGLE + _MIN_SHINGLES:
        return None
    mins = [-1] * _BINS
    for i in range(len(words) - _SHINGLE + 1):
        digest = hashlib.blake2b(" ".join(words[i : i + _SHINGLE]).encode(), digest_size=8)
        value = int.from_bytes(digest.digest(), "big")
        slot, rest = value % _BINS, value // _BINS
        if mins[slot] < 0 or rest < mins[slot]:
            mins[slot] = rest
    return mins


def campaign_keys(raw: bytes) -> list[tuple[object, ...]]:
    """The keys under which a message joins others (see the module docstring)."""
    msg = email.message_from_bytes(raw, policy=email.policy.compat32)
    subject = normalise_subject(_header(msg, "Subject"))
    senders = getaddresses([_header(msg, "From")])
    domain = senders[-1][1].rpartition("@")[2].lower() if senders else ""
    body = _body_text(msg)
    keys: list[tuple[object, ...]] = []
    if len(subject) >= _LONG_SUBJECT:
        keys.append(("subject", subject))
    elif subject:
        keys.append(("subject", subject, domain))
    link_hosts = frozenset(h.lower().rstrip(".") for h in _HOST.findall(body))
    if link_hosts and domain:
        keys.append(("hosts", domain, link_hosts))
    words = _NON_WORD.sub(" ", body.lower()).split()
    mins = _minhash(words)
    if mins is not None:
        for band in range(_BANDS):
            rows = tuple(mins[band * _ROWS : (band + 1) * _ROWS])
            if all(r >= 0 for r in rows):
                keys.append(("band", band, rows))
    return keys


def cluster(keys_per_message: Iterable[list[tuple[object, ...]]]) -> list[int]:
    """A campaign id per message (the index of the campaign's first message)."""
    parent: list[int] = []
    owner: dict[tuple[object, ...], int] = {}

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for index, keys in enumerate(keys_per_message):
        parent.append(index)
        for key in keys:
            other = owner.setdefault(key, index)
            a, b = find(index), find(other)
            if a != b:
                parent[max(a, b)] = min(a, b)  # the earliest message names the campaign
    return [find(i) for i in range(len(parent))]
