"""Signals from the sender line and the wording: brand impersonation and lure phrases.

The phrase lists are the stock wording of credential phishing as described in public guidance
(CISA, NCSC, APWG reports): requests to verify or re-enter credentials, threats of suspension,
and payment problems.  They are written from that general knowledge, not mined from any corpus,
and each category counts once, so wording alone never reaches the tag threshold.
"""

from __future__ import annotations

import re
from email.utils import parseaddr

from popproxy.scan import hosts
from popproxy.scan.config import ProtectedBrand
from popproxy.scan.lists import FREEMAIL_DOMAINS
from popproxy.scan.lookalike import is_official, names_brand
from popproxy.scan.verdict import Signal, clean_detail
from popproxy.scan.weights import weight

_ACCOUNT = r"(?:account|identity|e-?mail|mailbox|password|credentials|information|details|login)"
_LURES: dict[str, re.Pattern[str]] = {
    "lure-credentials": re.compile(
        r"(?i)\b(?:verify|confirm|validate|update|reactivate|unlock|restore|re-?enter)\s+"
        r"(?:your|the)\s+" + _ACCOUNT + r"|\bpassword\s+(?:will\s+)?expir|"
        r"\bunusual\s+(?:sign[- ]?in|login|activity)|\bsuspicious\s+(?:sign[- ]?in|login)|"
        r"\bmailbox\s+(?:is\s+)?(?:full|quota)|\bstorage\s+(?:is\s+)?(?:full|quota)"
    ),
    "lure-urgency": re.compile(
        r"(?i)\baccount\s+(?:has\s+been\s+|will\s+be\s+|is\s+)?"
        r"(?:suspended|locked|disabled|deactivated|restricted|terminated|on\s+hold)|"
        r"\bwithin\s+(?:24|48|72)\s+hours\b|\bimmediate\s+action\b|\baction\s+required\b|"
        r"\bfailure\s+to\s+(?:verify|confirm|update)"
    ),
    "lure-payment": re.compile(
        r"(?i)\bpayment\s+(?:has\s+)?(?:failed|declined|was\s+declined|unsuccessful)|"
        r"\bunable\s+to\s+process\s+your\s+payment|\bupdate\s+your\s+(?:billing|payment)|"
        r"\b(?:claim|receive)\s+your\s+(?:reward|prize|refund|gift)"
    ),
}


def _sig(name: str, detail: str) -> Signal:
    return Signal(name=name, weight=weight(name), detail=clean_detail(detail))


def lure_signals(text: str) -> list[Signal]:
    """One signal per lure category found in the visible text and subject."""
    return [_sig(name, "") for name, pattern in _LURES.items() if pattern.search(text)]


def sender_signals(from_header: str, brands: tuple[ProtectedBrand, ...]) -> list[Signal]:
    """A display name naming a protected brand while the address belongs to someone else."""
    display, address = parseaddr(from_header)
    domain = address.rpartition("@")[2].lower().strip(".>")
    if not display or not domain:
        return []
    brand = names_brand(display, brands)
    if brand is None:
        return []
    ascii_domain = hosts.to_ascii(domain)
    if is_official(ascii_domain, brand):
        return []
    free = hosts.owner_domain(ascii_domain) in FREEMAIL_DOMAINS
    name = "sender-brand-freemail" if free else "sender-brand-mismatch"
    return [_sig(name, f"{brand.name}: {ascii_domain}")]
