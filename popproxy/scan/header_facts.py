"""The headers the sender and recipient rules read, decoded and parsed once per message.

Several rules read From, Reply-To and To (the sender line, the advance-fee check, the greeting,
the open-redirect exemption, the action-link rule); decoding the RFC 2047 words and splitting
the address lists (``email.utils.getaddresses``, not cheap on a hostile header) once, into a
frozen :class:`HeaderFacts`, gives every rule the same reading at the cost of one.
"""

from __future__ import annotations

from dataclasses import dataclass
from email.message import Message
from email.utils import getaddresses

from popproxy.scan import hosts
from popproxy.scan.header_words import header_text

# (display name, address) pairs of one address header, entries with neither left out.
Mailboxes = tuple[tuple[str, str], ...]


def mailboxes(header: str) -> Mailboxes:
    """The (display name, address) entries of an address header (RFC 5322 section 3.4)."""
    return tuple((name, addr) for name, addr in getaddresses([header]) if name or addr)


def domain_of(address: str) -> str:
    """The ASCII domain of an address; "" when it has no local part or a dotless domain."""
    local, at, domain = address.rpartition("@")
    domain = domain.lower().strip(".>")
    return hosts.to_ascii(domain) if at and local and "." in domain else ""


def _last_domain(boxes: Mailboxes) -> str:
    domains = [d for d in (domain_of(a) for _, a in boxes) if d]
    return domains[-1] if domains else ""


@dataclass(frozen=True, slots=True, kw_only=True)
class HeaderFacts:
    """One message's address and subject headers, decoded, with their address lists parsed.

    Attributes:
        from_, reply_to, to, subject, list_id: the fields with RFC 2047 encoded-words
            decoded ("" when absent).
        raw_from: From as it arrived (encoded-words kept: a comma inside one is part of the
            name, not a separator between entries).
        from_boxes, reply_to_boxes, to_boxes: the parsed address lists.
        sender_domain: the ASCII domain of the (last) From address; "" when it has none.
    """

    from_: str
    raw_from: str
    reply_to: str
    to: str
    subject: str
    list_id: str
    from_boxes: Mailboxes
    reply_to_boxes: Mailboxes
    to_boxes: Mailboxes
    sender_domain: str

    @classmethod
    def parse(
        cls,
        *,
        from_: str = "",
        reply_to: str = "",
        to: str = "",
        subject: str = "",
        list_id: str = "",
        raw_from: str | None = None,
    ) -> HeaderFacts:
        """The facts of decoded header values (``raw_from`` None: the same as ``from_``)."""
        from_boxes = mailboxes(from_)
        return cls(
            from_=from_,
            raw_from=from_ if raw_from is None else raw_from,
            reply_to=reply_to,
            to=to,
            subject=subject,
            list_id=list_id,
            from_boxes=from_boxes,
            reply_to_boxes=mailboxes(reply_to),
            to_boxes=mailboxes(to),
            sender_domain=_last_domain(from_boxes),
        )

    @classmethod
    def of(cls, msg: Message) -> HeaderFacts:
        """The facts of a parsed message's header."""
        return cls.parse(
            from_=header_text(msg, "From"),
            reply_to=header_text(msg, "Reply-To"),
            to=header_text(msg, "To"),
            subject=header_text(msg, "Subject"),
            list_id=header_text(msg, "List-Id"),
            raw_from=str(msg.get("From", "")),
        )


# A message without any of these headers (the default for rules called on text alone).
NO_HEADERS = HeaderFacts.parse()
