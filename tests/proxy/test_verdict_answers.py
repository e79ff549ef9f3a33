"""The dispatch tables of the I/O shell agree with the verb table in pop3/verbs.py."""

from __future__ import annotations

from popproxy.pop3.verbs import VERBS, allowed_in
from popproxy.proxy.auth import AuthHandler
from popproxy.proxy.session import Session
from popproxy.proxy.verdict_answers import FROM_VERDICTS, TRACKED

# Refused by AuthHandler.command itself, with a reason (the proxy never shows the upstream's
# APOP timestamp, RFC 1939 s7).
REFUSED_LOGIN_VERBS = {"APOP"}


def test_every_login_phase_verb_has_exactly_one_handler() -> None:
    local = set(Session._LOGIN_PHASE_LOCAL)
    steps = set(AuthHandler._STEPS)
    assert not local & steps
    assert local | steps | REFUSED_LOGIN_VERBS == allowed_in("login")


def test_answers_from_verdicts_are_the_sized_transaction_verbs() -> None:
    # Every command whose answer carries a size or a message body (RFC 1939 s5, s7), UIDL (a
    # held message's notice has its own, issue 19 item 9) and DELE (of a released original
    # served by the proxy: never relayed).  QUIT's +OK commits the deletions.
    assert set(FROM_VERDICTS) == {"STAT", "LIST", "RETR", "TOP", "UIDL", "DELE"}
    assert set(TRACKED) == {"RSET", "QUIT"}
    for verb in (*FROM_VERDICTS, *TRACKED):
        assert allowed_in("transaction") >= {verb}
        assert "login" not in VERBS[verb].phases or verb == "QUIT"
