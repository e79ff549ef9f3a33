"""One cached verdict and its stored form (file line, Redis value); keys naming it.

Split from :mod:`popproxy.proxy.verdict_cache`, which re-exports these names.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, fields
from typing import Any

from popproxy.scan.evidence import Evidence


# Slots: a big mailbox keeps 20,000+ of these alive; without a __dict__ each is 128 bytes
# instead of 224 plus its dict, and ``carried_to`` took 2.3 us instead of 7 us here.
@dataclass(frozen=True, slots=True)
class CachedVerdict:
    action: str  # pass, tag, defang, quarantine, unscanned
    score: float
    reasons: tuple[str, ...]
    size: int  # octets the client receives for this message
    scanned_at: float
    generation: str  # scanner settings + feed versions it was judged with
    quarantine_id: str = ""
    signals: tuple[str, ...] = ()
    # A scanner error: good for this session only, judged again next time.
    transient: bool = False
    # A quarantined message the admin released: delivered as "pass" (never stored as such).
    released: bool = False
    # What the verdict was reached from (popproxy.scan.evidence): re-scored without the message
    # when only the feeds, weights, model or thresholds changed.  None: judge the message.
    evidence: Evidence | None = None
    # Hash of (upstream, user): the mailbox the entry belongs to, so entries of messages the
    # upstream no longer lists can be dropped (VerdictCache.forget_unlisted).
    mailbox: str = ""

    def carried_to(self, generation: str) -> CachedVerdict:
        """This verdict under ``generation``, all else equal.  Positional, not
        ``dataclasses.replace``: its per-call field walk was a tenth of a 20,000-message
        re-scoring STAT (tests/proxy/test_verdict_cache.py checks every field is kept)."""
        return CachedVerdict(self.action, self.score, self.reasons, self.size, self.scanned_at,
                             generation, self.quarantine_id, self.signals, self.transient,
                             self.released, self.evidence, self.mailbox)


def mailbox_key(upstream: str, username: str) -> str:
    """The hash naming one user's mailbox on one upstream (no user name is stored)."""
    material = b"\0".join((upstream.encode(), username.casefold().encode()))
    return hashlib.sha256(material).hexdigest()[:16]


def cache_key(upstream: str, username: str, uidl: bytes, size: int) -> str:
    """The message's identity: its UIDL *and* the size the upstream lists for it.

    Servers reuse a UIDL for new content (Dovecot's pop3_reuse_xuidl, qpopper, a reset
    UIDVALIDITY); with the size in the key such a message is judged anew instead of being
    delivered under the old message's verdict and size (RFC 1939 section 5: LIST == RETR).
    """
    return cache_key_in(mailbox_material(upstream, username), uidl, size)


def mailbox_material(upstream: str, username: str) -> bytes:
    """What every ``cache_key`` of one mailbox starts with: made once per listing, not once
    per message (issue 18: CPU per session)."""
    return b"\0".join((upstream.encode(), username.casefold().encode()))


def cache_key_in(mailbox: bytes, uidl: bytes, size: int) -> str:
    """``cache_key`` with its first half from ``mailbox_material``."""
    material = b"\0".join((mailbox, uidl, str(size).encode()))
    return hashlib.sha256(material).hexdigest()[:32]


def listing_keys(upstream: str, username: str, uidls: dict[int, bytes], sizes: dict[int, int]
                 ) -> dict[int, str]:
    """``cache_key`` of every listed message (a size the LIST left out counts as -1), the
    mailbox half hashed once and copied per message (a fresh sha256 object costs OpenSSL a
    digest look-up each; issue 18: every login's listing)."""
    mailbox = hashlib.sha256(mailbox_material(upstream, username) + b"\0")
    keys: dict[int, str] = {}
    for number, uidl in uidls.items():
        digest = mailbox.copy()
        digest.update(b"%s\0%d" % (uidl, sizes.get(number, -1)))  # as cache_key_in joins
        keys[number] = digest.hexdigest()[:32]
    return keys


OPTIONAL = ("reasons", "quarantine_id", "signals", "evidence", "mailbox")
ACTIONS = frozenset({"pass", "tag", "defang", "quarantine", "unscanned"})


def to_record(entry: CachedVerdict) -> dict[str, Any]:
    """The stored form (JSON file line and Redis value); transient entries are never stored.

    Empty optional fields are left out: most verdicts are "pass" with nothing to say, and in
    Redis that saves a sixth of the memory per verdict (docs/scaling.md).
    """
    # Shallow: dataclasses.asdict would deep-copy the evidence only to have it replaced by its
    # JSON form below; that copy was 2 s of a 2.5 s STAT re-scoring 20,000 verdicts
    # (bench/big_mailbox.py).
    record = {f.name: getattr(entry, f.name) for f in fields(entry)}
    del record["transient"], record["released"]
    record["evidence"] = None if entry.evidence is None else entry.evidence.to_json()
    for name in OPTIONAL:
        if not record[name]:
            del record[name]
    return record


# Equal evidence read from the cache file, shared as one object (``from_record``'s pool): a
# mailbox's plain-text messages have the same few (4,103 distinct among bench/big_mailbox.py's
# 20,000), so loading keeps a fifth of the objects, and re-scoring knows them by identity.
EvidencePool = dict[tuple[object, ...], Evidence]


def evidence_key(kept: Evidence) -> tuple[object, ...]:
    """Equal for equal evidence (hashable: the features as items)."""
    return (kept.signals, kept.hosts, tuple(kept.features.items()), kept.truncated)


def from_record(record: dict[str, Any], pool: EvidencePool | None = None) -> CachedVerdict:
    """Raises ValueError, KeyError or TypeError for a record this version cannot read.
    ``pool``: equal evidence comes back as the object pooled first."""
    fields = dict(record)
    fields["reasons"] = tuple(fields.get("reasons", ()))
    fields["signals"] = tuple(fields.get("signals", ()))
    fields.pop("transient", None)
    fields.pop("released", None)
    if fields.get("evidence") is not None:
        kept = Evidence.from_json(fields["evidence"])
        fields["evidence"] = kept if pool is None else pool.setdefault(evidence_key(kept), kept)
    entry = CachedVerdict(**fields)
    # Redis is outside this process: a damaged value must not reach STAT sums or rendering.
    texts = (entry.action, entry.generation, entry.quarantine_id, entry.mailbox, *entry.reasons,
             *entry.signals)
    if (entry.action not in ACTIONS or type(entry.size) is not int or entry.size < 0
            or not isinstance(entry.score, (int, float))
            or not isinstance(entry.scanned_at, (int, float))
            or not all(isinstance(text, str) for text in texts)):
        raise ValueError("not a verdict")
    return entry
