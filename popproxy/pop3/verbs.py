"""Every fact about each POP3 verb the proxy knows, in one table (``VERBS``).

The rest of the core derives from it: which verbs each state allows (``state.ALLOWED_VERBS``),
how many numeric arguments a TRANSACTION command takes (``commands.valid_transaction_args``),
whether PASS keeps its spaces (``commands.parse_command_line``), whether a +OK answer carries a
body (``framing.expects_multiline``) and which CAPA tags go with a verb (``capa``).  A verb that
is not in the table is refused in every state without reaching the upstream.

Sources: RFC 1939 (the base protocol; section 3 for the line syntax, 4 to 7 per state),
RFC 2449 (CAPA, section 5; capability tags, section 6), RFC 2595 (STLS, section 4), RFC 5034
(AUTH, section 4).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Multiline = Literal["always", "with-no-arg", "never"]
# The two phases in which a client sends commands: "login" (RFC 1939 section 4, the
# AUTHORIZATION state, before and after USER) and "transaction" (section 5).  state.py maps
# its states onto them; the others (inside AUTH, UPDATE, CLOSED) allow no verb.
Phase = Literal["login", "transaction"]

_LOGIN: frozenset[Phase] = frozenset({"login"})
_TRANSACTION: frozenset[Phase] = frozenset({"transaction"})
_ANY: frozenset[Phase] = frozenset({"login", "transaction"})


@dataclass(frozen=True, slots=True, kw_only=True)
class VerbFacts:
    """What the protocol says about one verb.

    Attributes:
        name: the keyword, upper case.
        phases: where a client may send it (elsewhere it gets -ERR and never reaches the
            upstream).
        args: (least, most) numeric arguments, checked in TRANSACTION (RFC 1939 section 3:
            decimal numbers); None: the arguments are not numbers (USER, PASS, APOP, AUTH).
        rest_of_line: the one argument is the whole rest of the line, spaces included
            (RFC 1939 section 7: a password may contain spaces).
        multiline_reply: "always", "with-no-arg" (a listing only without an argument) or
            "never": whether a +OK answer is followed by a dot-terminated body.
        capa: the CAPA tag (RFC 2449 section 6) that advertises the verb, if any.
        rfc: where the verb is defined.
    """

    name: str
    phases: frozenset[Phase]
    args: tuple[int, int] | None
    rest_of_line: bool = False
    multiline_reply: Multiline = "never"
    capa: str | None = None
    rfc: str


# In the order CAPA lists the tags (capa.proxy_capabilities): STLS first, then the login methods.
_TABLE = (
    VerbFacts(name="STLS", phases=_LOGIN, args=(0, 0), capa="STLS", rfc="RFC 2595 s4"),
    VerbFacts(name="USER", phases=_LOGIN, args=None, capa="USER", rfc="RFC 1939 s7, RFC 2449 s6.2"),
    # A PASS with no USER before it gets the proxy's own -ERR (proxy/auth.py), not "invalid".
    VerbFacts(name="PASS", phases=_LOGIN, args=None, rest_of_line=True, rfc="RFC 1939 s7"),
    # Allowed so that it is refused with a reason (the upstream's timestamp is never shown).
    VerbFacts(name="APOP", phases=_LOGIN, args=None, rfc="RFC 1939 s7"),
    # Bare AUTH lists the mechanisms (de-facto, used by Outlook and others).
    VerbFacts(name="AUTH", phases=_LOGIN, args=None, multiline_reply="with-no-arg", capa="SASL",
              rfc="RFC 5034 s4, RFC 2449 s6.3"),
    VerbFacts(name="CAPA", phases=_ANY, args=(0, 0), multiline_reply="always", rfc="RFC 2449 s5"),
    VerbFacts(name="QUIT", phases=_ANY, args=(0, 0), rfc="RFC 1939 s4, s6"),
    VerbFacts(name="STAT", phases=_TRANSACTION, args=(0, 0), rfc="RFC 1939 s5"),
    VerbFacts(name="LIST", phases=_TRANSACTION, args=(0, 1), multiline_reply="with-no-arg",
              rfc="RFC 1939 s5"),
    VerbFacts(name="RETR", phases=_TRANSACTION, args=(1, 1), multiline_reply="always",
              rfc="RFC 1939 s5"),
    VerbFacts(name="DELE", phases=_TRANSACTION, args=(1, 1), rfc="RFC 1939 s5"),
    VerbFacts(name="NOOP", phases=_TRANSACTION, args=(0, 0), rfc="RFC 1939 s5"),
    VerbFacts(name="RSET", phases=_TRANSACTION, args=(0, 0), rfc="RFC 1939 s5"),
    VerbFacts(name="TOP", phases=_TRANSACTION, args=(2, 2), multiline_reply="always", capa="TOP",
              rfc="RFC 1939 s7, RFC 2449 s6.1"),
    VerbFacts(name="UIDL", phases=_TRANSACTION, args=(0, 1), multiline_reply="with-no-arg",
              capa="UIDL", rfc="RFC 1939 s7, RFC 2449 s6.8"),
)

VERBS: dict[str, VerbFacts] = {facts.name: facts for facts in _TABLE}


def allowed_in(phase: Phase) -> frozenset[str]:
    """The verbs a client may send in ``phase``."""
    return frozenset(facts.name for facts in _TABLE if phase in facts.phases)
