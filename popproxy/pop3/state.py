"""The POP3 session state machine: every state transition of the protocol lives in this file.

Theory of operation (RFC 1939 section 3, RFC 2449, RFC 2595, RFC 5034):

* A session starts in AUTHORIZATION.  ``USER`` accepted moves to AUTHORIZATION_USER, where
  ``PASS`` completes the login.  ``AUTH`` moves to AUTHORIZATION_SASL until the exchange ends.
* A successful login (PASS, AUTH) moves to TRANSACTION; a failed one returns to AUTHORIZATION
  (RFC 1939 section 7: "the client may then issue another authentication command").
* ``STLS`` (RFC 2595 section 4) is legal only before login, once; it drops any USER already
  given, so nothing from the plaintext phase survives into TLS (session fixation).
* ``QUIT`` in TRANSACTION enters UPDATE (RFC 1939 section 6: deletions are committed only
  there); QUIT anywhere else just ends the session.

Transitions are data (``TRANSITIONS``); an event that is not in the table for the current state
raises ``LocalProtocolError``: the caller asked for something the protocol forbids.
"""

from __future__ import annotations

import enum

from popproxy.pop3.errors import LocalProtocolError
from popproxy.pop3.verbs import Phase, allowed_in


class State(enum.Enum):
    # Members are singletons compared by identity: the C identity hash, not Enum's Python
    # ``hash(self._name_)`` (the transition and verb tables are looked up ~10 times a login).
    __hash__ = object.__hash__

    AUTHORIZATION = "AUTHORIZATION"
    AUTHORIZATION_USER = "AUTHORIZATION_USER"  # USER accepted, PASS expected
    AUTHORIZATION_SASL = "AUTHORIZATION_SASL"  # inside an AUTH exchange
    TRANSACTION = "TRANSACTION"
    UPDATE = "UPDATE"
    CLOSED = "CLOSED"


class Event(enum.Enum):
    __hash__ = object.__hash__  # as State's

    USER_ACCEPTED = "USER_ACCEPTED"
    LOGIN_OK = "LOGIN_OK"
    LOGIN_FAILED = "LOGIN_FAILED"
    SASL_STARTED = "SASL_STARTED"
    STLS_DONE = "STLS_DONE"
    QUIT = "QUIT"
    CLOSED = "CLOSED"


_AUTH_STATES = (State.AUTHORIZATION, State.AUTHORIZATION_USER)

TRANSITIONS: dict[tuple[State, Event], State] = {
    (State.AUTHORIZATION, Event.USER_ACCEPTED): State.AUTHORIZATION_USER,
    # RFC 1939 is silent on a second USER; like Dovecot we let it replace the first.
    (State.AUTHORIZATION_USER, Event.USER_ACCEPTED): State.AUTHORIZATION_USER,
    (State.AUTHORIZATION_USER, Event.LOGIN_OK): State.TRANSACTION,
    (State.AUTHORIZATION_USER, Event.LOGIN_FAILED): State.AUTHORIZATION,
    (State.AUTHORIZATION, Event.SASL_STARTED): State.AUTHORIZATION_SASL,
    (State.AUTHORIZATION_USER, Event.SASL_STARTED): State.AUTHORIZATION_SASL,
    (State.AUTHORIZATION_SASL, Event.LOGIN_OK): State.TRANSACTION,
    (State.AUTHORIZATION_SASL, Event.LOGIN_FAILED): State.AUTHORIZATION,
    # RFC 2595 section 4 + session fixation: TLS starts from a clean AUTHORIZATION state.
    (State.AUTHORIZATION, Event.STLS_DONE): State.AUTHORIZATION,
    (State.AUTHORIZATION_USER, Event.STLS_DONE): State.AUTHORIZATION,
    (State.AUTHORIZATION, Event.QUIT): State.CLOSED,
    (State.AUTHORIZATION_USER, Event.QUIT): State.CLOSED,
    (State.TRANSACTION, Event.QUIT): State.UPDATE,
    **{(s, Event.CLOSED): State.CLOSED for s in State},
}

# The command phase of each state (verbs.py says which verbs each phase allows).  Inside AUTH the
# client's lines are SASL responses, not commands (RFC 5034 section 4); UPDATE and CLOSED take
# none.
_PHASES: dict[State, Phase] = {
    State.AUTHORIZATION: "login",
    State.AUTHORIZATION_USER: "login",
    State.TRANSACTION: "transaction",
}

# Verbs a client may send in each state.  Anything else gets -ERR without reaching the upstream.
ALLOWED_VERBS: dict[State, frozenset[str]] = {
    state: allowed_in(_PHASES[state]) if state in _PHASES else frozenset() for state in State
}


class SessionState:
    """Tracks where one client session is; the proxy asks it before acting on a command."""

    # Slots: one per connection lives as long as it does (idle memory per session).
    __slots__ = ("state", "stls_used", "tls_active")

    def __init__(self, implicit_tls: bool = False) -> None:
        self.state = State.AUTHORIZATION
        self.tls_active = implicit_tls  # port-995 style: TLS before the greeting
        self.stls_used = False

    def allows(self, verb: str) -> bool:
        """True if ``verb`` may be sent in the current state."""
        return verb in ALLOWED_VERBS[self.state]

    @property
    def authenticated(self) -> bool:
        return self.state in (State.TRANSACTION, State.UPDATE)

    @property
    def in_sasl(self) -> bool:
        """Inside an AUTH exchange: the client's next line is a SASL response (RFC 5034 s4)."""
        return self.state is State.AUTHORIZATION_SASL

    @property
    def before_login(self) -> bool:
        return self.state in _AUTH_STATES

    def apply(self, event: Event) -> State:
        """Move to the next state; an event the table does not list is a caller bug."""
        try:
            new = TRANSITIONS[(self.state, event)]
        except KeyError:
            raise LocalProtocolError(f"{event.value} is not legal in {self.state.value}") from None
        if event is Event.STLS_DONE:
            if self.stls_used or self.tls_active:
                raise LocalProtocolError("STLS twice (RFC 2595 section 4)")
            self.stls_used = True
            self.tls_active = True
        self.state = new
        return new
