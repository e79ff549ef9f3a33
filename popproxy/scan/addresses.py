"""Signals from the address headers: the sender line (From, Reply-To) and the recipient.

Brand impersonation in the display name, malformed or impossible sender addresses, replies
routed to a free mailbox, and a Subject repeating the recipient's address.  A mailing list's
"Name via List" rewrite and a brand's own secondary domains are honest mail, not evidence.
"""

from __future__ import annotations

import re
from dataclasses import replace

from popproxy.scan import hosts
from popproxy.scan.header_facts import HeaderFacts, domain_of
from popproxy.scan.lists import FREEMAIL_DOMAINS
from popproxy.scan.lookalike import is_official, names_brand
from popproxy.scan.settings import ProtectedBrand
from popproxy.scan.verdict import Signal, clean_detail, clean_evidence
from popproxy.scan.weights import weight


def _sig(name: str, detail: str, evidence: str = "") -> Signal:
    return Signal(
        name=name, weight=weight(name), detail=clean_detail(detail),
        evidence=clean_evidence(evidence),
    )


def _with_evidence(signals: list[Signal], field_of: dict[str, str], default: str) -> list[Signal]:
    """The signals with their evidence: the header field each came from (for --explain)."""
    return [replace(s, evidence=clean_evidence(field_of.get(s.name, default))) for s in signals]


# An address or domain written inside a display name ("support@bank.example" <x@evil.test>).
# The local part starts only where a run of its characters starts and is taken whole (``++``):
# a start inside the run cannot succeed where the run's start failed, and trying every one made
# the search quadratic on a long run ("a" * 100,000 took minutes).
_SHOWN_ADDRESS = re.compile(
    r"(?<![\w.+-])[\w.+-]++@([a-z0-9-]+(?:\.[a-z0-9-]+)*\.[a-z]{2,24})\b", re.I
)


def _top_level_commas(header: str) -> int:
    """Commas outside quotes, comments and angle brackets: separators between From entries."""
    count = depth = 0
    quoted = False
    for ch in header:
        if ch == '"':
            quoted = not quoted
        elif quoted:
            continue
        elif ch in "<(":
            depth += 1
        elif ch in ">)" and depth:
            depth -= 1
        elif ch == "," and not depth:
            count += 1
    return count


def sender_signals(headers: HeaderFacts, brands: tuple[ProtectedBrand, ...]) -> list[Signal]:
    """Signals from From and Reply-To.

    - sender-malformed: From holds several entries.  RFC 5322 section 3.6.2 allows that only
      with a Sender field, but no mail client composes it; in practice the extra entries come
      from unquoted commas in a display name, which hides the real address behind a name that
      looks like part of a list.  (A Sender field does not excuse it: bulk senders add one.)
      A From without a usable address is not counted: anonymised samples look like that.
      Entries are counted in From as it arrived: a comma inside an encoded-word
      ("=?utf-8?Q?Doe=2C_Jane?=", Outlook's "Surname, Given") is part of the name, as in a
      quoted string.
    - sender-display-address, sender-brand-*, sender-role-freemail: see
      :func:`_display_name_signals`.
    - sender-bad-domain: the From domain cannot exist (characters no host name has, a suffix
      no registry runs, labels spelled out one letter at a time).
    - reply-to-freemail: replies are diverted to a free mailbox on another domain (not for a
      mailing list's rewritten From, told apart by List-Id: see :func:`list_rewritten_from`).

    Args:
        headers: the message's From, Reply-To and List-Id.
        brands: the brands whose names are checked in the display name.
    """
    out: list[Signal] = []
    commas = _top_level_commas(headers.raw_from)
    if commas:
        out.append(_sig("sender-malformed", f"{commas + 1} entries"))
    out.extend(_display_name_signals(headers, brands))
    domain = headers.sender_domain
    bad = _bad_domain(domain) if domain else ""
    if bad:
        out.append(_sig("sender-bad-domain", f"{bad}: {domain}"))
    reply = _diverted_reply(headers)
    if reply:
        out.append(_sig("reply-to-freemail", reply))
    return _with_evidence(
        out, {"reply-to-freemail": f"Reply-To: {headers.reply_to}"}, f"From: {headers.from_}"
    )


def _display_name_signals(
    headers: HeaderFacts, brands: tuple[ProtectedBrand, ...]
) -> list[Signal]:
    """What the display name claims against the address it comes from.

    - sender-display-address: the display name shows an address at another domain.
    - sender-brand-*: the display name names a protected brand, the address is elsewhere.
    - sender-role-freemail: a desk or team name ("Security Team") on a free mailbox.
    """
    out: list[Signal] = []
    domain = headers.sender_domain
    # What a mail client shows as the sender name: everything before the address.
    from_header = headers.from_
    display = from_header.rpartition("<")[0] if "<" in from_header else ""
    display = display or " ".join(name for name, _ in headers.from_boxes)
    shown = _SHOWN_ADDRESS.search(display)
    shown_domain = shown.group(1).lower() if shown else ""
    if shown_domain and domain and hosts.owner_domain(shown_domain) != hosts.owner_domain(domain):
        out.append(_sig("sender-display-address", f"{shown_domain} -> {domain}"))
    brand = names_brand(display, brands)
    if brand is not None and not (domain and is_official(domain, brand)):
        out.append(_sig(_brand_rule(brand, domain), f"{brand.name}: {domain}"))
    free_sender = bool(domain) and hosts.owner_domain(domain) in _SELF_SERVICE_DOMAINS
    if free_sender and brand is None and _ROLE_NAME.search(display.lower()):
        out.append(_sig("sender-role-freemail", domain))
    return out


def _diverted_reply(headers: HeaderFacts) -> str:
    """The free-mailbox Reply-To domain replies are diverted to ("" when none)."""
    reply_domains = [d for d in (domain_of(a) for _, a in headers.reply_to_boxes) if d]
    if not reply_domains or not headers.sender_domain or list_rewritten_from(headers):
        return ""
    reply = reply_domains[-1]
    if hosts.owner_domain(reply) in FREEMAIL_DOMAINS and reply != headers.sender_domain:
        return reply
    return ""


def _brand_rule(brand: ProtectedBrand, domain: str) -> str:
    """Which sender-brand-* rule a brand display name on a foreign ``domain`` raises.

    Brands send from marketing and regional domains of their own that carry their name
    (microsoftstoreemail.com, facebookmail.com): the name glued into the sender's domain is
    weak evidence (sender-brand-related), since look-alikes are built the same way.  A
    domain that cannot exist ("__brand.example", "%brand.example") belongs to no one.
    """
    if hosts.owner_domain(domain) in FREEMAIL_DOMAINS:
        return "sender-brand-freemail"
    label = hosts.owner_label(domain) if domain and not _bad_domain(domain) else ""
    words = (brand.name, *(a.lower() for a in brand.aliases if " " not in a))
    if label and any(word in label for word in words):
        return "sender-brand-related"
    return "sender-brand-mismatch"


# A mailing list's rewritten sender (DMARC mitigation in Mailman 2.1.18+, Mailman 3 and Google
# Groups): the list writes "<poster> via <list name>" from its own posting address and puts the
# poster's address in Reply-To.
_VIA_LIST = re.compile(r"(?i)^(.*?\S)\s+via\s+\S")
_NAME_QUOTES = " '\""


def list_rewritten_from(headers: HeaderFacts) -> bool:
    """True when From is a list's rewrite of a poster's address.

    The display name says "<poster> via <list>", the address is the list's own posting address
    (its List-Id, "<users.lists.example>" per RFC 2919, is that address with "@" turned into
    "."), and Reply-To, when it gives a name, names that poster.  A forger can write all of
    this, but then Reply-To is the poster the mail claims to come from, and the other sender
    rules still judge the display name.
    """
    boxes = headers.from_boxes
    list_id = headers.list_id
    if len(boxes) != 1 or not list_id:
        return False
    name, address = boxes[0]
    via = _VIA_LIST.match(name.strip())
    if via is None or "@" not in address:
        return False
    list_key = list_id.rpartition("<")[2].partition(">")[0].strip().lower()
    if not list_key or list_key != address.strip().lower().replace("@", "."):
        return False
    poster = via.group(1).strip(_NAME_QUOTES).casefold()
    replies = [n.strip(_NAME_QUOTES).casefold() for n, _ in headers.reply_to_boxes]
    return all(not n or n == poster for n in replies)


# RFC 2606 / RFC 6761 names for tests and documentation: not real, but not forgeries either.
_RESERVED_TLDS = frozenset({"test", "example", "localhost"})
_HOST_CHARS = re.compile(r"^[a-z0-9.-]+$")
# Four or more one-character labels in a row ("a.b.c.d.e.example"): spelled out to dodge
# filters that match domain names; no registrar or mail host names things that way.
_SPELLED_OUT = re.compile(r"(?:^|\.)(?:[a-z0-9]\.){4,}")


def _bad_domain(domain: str) -> str:
    """Why a From domain cannot be a real mail domain ("" when it can).

    Only domains with a dot are judged: a dotless name (local system mail, or an anonymised
    sample) says nothing either way.
    """
    if not _HOST_CHARS.match(domain) or ".." in domain:
        return "invalid-characters"
    if not hosts.known_suffix(domain) and domain.rsplit(".", 1)[-1] not in _RESERVED_TLDS:
        return "unknown-suffix"
    if _SPELLED_OUT.search(domain):
        return "spelled-out"
    return ""


# Where anyone can get an address in minutes: free mailboxes, and the default domain every
# Microsoft 365 trial tenant gets (organisations send from their own domain once set up).
_SELF_SERVICE_DOMAINS = FREEMAIL_DOMAINS | frozenset({"onmicrosoft.com"})


def free_mailbox_sender(headers: HeaderFacts) -> str:
    """The free-mailbox domain the sender writes from or wants replies at ("" when none)."""
    for boxes in (headers.reply_to_boxes, headers.from_boxes):
        for _, address in boxes:
            domain = domain_of(address)
            if domain and hosts.owner_domain(domain) in FREEMAIL_DOMAINS:
                return domain
    return ""


# Words that make a display name read like an organisation's desk rather than a person.
_ROLE_NAME = re.compile(
    r"(?<![^\W_])(?:support|security|service|services|team|department|dept|admin|"
    r"administrator|helpdesk|help\s+desk|billing|notification|notifications|alert|alerts|"
    r"account|accounts|customer|bank|verification|no-?reply|webmaster|it\s+desk)(?![^\W_])"
)


def recipient_signals(headers: HeaderFacts) -> list[Signal]:
    """subject-recipient-address: the Subject repeats the recipient's full address.

    Bulk phishing personalises with the only thing it knows, the address; people and real
    services use a name.
    """
    boxes = [a.lower() for _, a in headers.to_boxes if "@" in a]
    lowered = headers.subject.lower()
    if len(boxes) == 1 and boxes[0] in lowered:
        return [_sig("subject-recipient-address", "", f"Subject: {headers.subject}")]
    return []
