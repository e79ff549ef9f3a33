"""The session state machine (RFC 1939 s3-6, RFC 2595 s4, RFC 5034)."""

from __future__ import annotations

import itertools

import pytest

from popproxy.pop3.errors import LocalProtocolError, ProtocolError
from popproxy.pop3.state import ALLOWED_VERBS, TRANSITIONS, Event, SessionState, State


def in_state(state: State) -> SessionState:
    session = SessionState()
    session.state = state
    return session


def test_a_session_starts_in_authorization() -> None:
    session = SessionState()
    assert session.state is State.AUTHORIZATION
    assert session.before_login
    assert not session.authenticated
    assert not session.tls_active
    assert not session.stls_used


@pytest.mark.parametrize(
    ("state", "event", "new"),
    [
        (State.AUTHORIZATION, Event.USER_ACCEPTED, State.AUTHORIZATION_USER),
        (State.AUTHORIZATION_USER, Event.USER_ACCEPTED, State.AUTHORIZATION_USER),
        (State.AUTHORIZATION_USER, Event.LOGIN_OK, State.TRANSACTION),
        (State.AUTHORIZATION_USER, Event.LOGIN_FAILED, State.AUTHORIZATION),
        (State.AUTHORIZATION, Event.SASL_STARTED, State.AUTHORIZATION_SASL),
        (State.AUTHORIZATION_USER, Event.SASL_STARTED, State.AUTHORIZATION_SASL),
        (State.AUTHORIZATION_SASL, Event.LOGIN_OK, State.TRANSACTION),
        (State.AUTHORIZATION_SASL, Event.LOGIN_FAILED, State.AUTHORIZATION),
        (State.AUTHORIZATION, Event.STLS_DONE, State.AUTHORIZATION),
        (State.AUTHORIZATION_USER, Event.STLS_DONE, State.AUTHORIZATION),
        (State.AUTHORIZATION, Event.QUIT, State.CLOSED),
        (State.AUTHORIZATION_USER, Event.QUIT, State.CLOSED),
        (State.TRANSACTION, Event.QUIT, State.UPDATE),
        *[(s, Event.CLOSED, State.CLOSED) for s in State],
    ],
)
def test_transitions(state: State, event: Event, new: State) -> None:
    assert TRANSITIONS[(state, event)] is new
    session = in_state(state)
    assert session.apply(event) is new
    assert session.state is new


def test_the_table_has_no_other_transitions() -> None:
    # The parametrized list above is the reviewed contract; the table must not grow silently.
    assert len(TRANSITIONS) == 13 + len(State)


ILLEGAL = [pair for pair in itertools.product(State, Event) if pair not in TRANSITIONS]


@pytest.mark.parametrize(("state", "event"), ILLEGAL)
def test_illegal_transition(state: State, event: Event) -> None:
    session = in_state(state)
    with pytest.raises(LocalProtocolError, match=f"{event.value} is not legal in {state.value}"):
        session.apply(event)
    assert session.state is state  # nothing changed
    assert not session.stls_used


def test_some_illegal_transitions_explicitly() -> None:
    for state, event in [
        (State.AUTHORIZATION, Event.LOGIN_OK),  # PASS without USER
        (State.TRANSACTION, Event.USER_ACCEPTED),
        (State.TRANSACTION, Event.STLS_DONE),  # RFC 2595 s4: only in AUTHORIZATION
        (State.AUTHORIZATION_SASL, Event.STLS_DONE),
        (State.AUTHORIZATION_SASL, Event.QUIT),
        (State.UPDATE, Event.QUIT),
        (State.CLOSED, Event.USER_ACCEPTED),
    ]:
        assert (state, event) in ILLEGAL


def test_local_protocol_error_is_a_protocol_error() -> None:
    with pytest.raises(ProtocolError):
        in_state(State.CLOSED).apply(Event.LOGIN_OK)


def test_protocol_error_base_cannot_be_raised_directly() -> None:
    with pytest.raises(TypeError):
        ProtocolError("use a subclass")


def test_stls_twice_is_refused() -> None:
    session = SessionState()
    assert session.apply(Event.STLS_DONE) is State.AUTHORIZATION
    assert session.tls_active and session.stls_used
    with pytest.raises(LocalProtocolError, match="STLS twice"):
        session.apply(Event.STLS_DONE)
    assert session.state is State.AUTHORIZATION


def test_stls_refused_on_an_implicit_tls_connection() -> None:
    session = SessionState(implicit_tls=True)  # POP3S listener: TLS from the first byte
    assert session.tls_active
    with pytest.raises(LocalProtocolError):
        session.apply(Event.STLS_DONE)
    assert not session.stls_used


def test_stls_after_user_drops_the_user() -> None:
    session = SessionState()
    session.apply(Event.USER_ACCEPTED)
    assert session.state is State.AUTHORIZATION_USER
    assert session.apply(Event.STLS_DONE) is State.AUTHORIZATION
    # PASS from the plaintext USER can no longer complete a login.
    with pytest.raises(LocalProtocolError):
        session.apply(Event.LOGIN_OK)


def test_user_pass_login_then_quit() -> None:
    session = SessionState()
    for event, state in [
        (Event.USER_ACCEPTED, State.AUTHORIZATION_USER),
        (Event.LOGIN_FAILED, State.AUTHORIZATION),
        (Event.USER_ACCEPTED, State.AUTHORIZATION_USER),
        (Event.USER_ACCEPTED, State.AUTHORIZATION_USER),
        (Event.LOGIN_OK, State.TRANSACTION),
    ]:
        assert session.apply(event) is state
    assert session.authenticated and not session.before_login
    assert session.apply(Event.QUIT) is State.UPDATE
    assert session.authenticated
    assert session.apply(Event.CLOSED) is State.CLOSED
    assert not session.authenticated and not session.before_login


def test_sasl_login_and_failure() -> None:
    session = SessionState()
    session.apply(Event.SASL_STARTED)
    assert not session.before_login  # inside AUTH, lines are not commands
    assert not session.authenticated
    assert session.apply(Event.LOGIN_FAILED) is State.AUTHORIZATION
    assert session.apply(Event.SASL_STARTED) is State.AUTHORIZATION_SASL
    assert session.apply(Event.LOGIN_OK) is State.TRANSACTION
    assert session.authenticated


@pytest.mark.parametrize(
    ("state", "authenticated", "before_login"),
    [
        (State.AUTHORIZATION, False, True),
        (State.AUTHORIZATION_USER, False, True),
        (State.AUTHORIZATION_SASL, False, False),
        (State.TRANSACTION, True, False),
        (State.UPDATE, True, False),
        (State.CLOSED, False, False),
    ],
)
def test_state_predicates(state: State, authenticated: bool, before_login: bool) -> None:
    session = in_state(state)
    assert session.authenticated is authenticated
    assert session.before_login is before_login


# ------------------------------------------------------------------ allowed verbs

ALL_VERBS = sorted(set().union(*ALLOWED_VERBS.values()) | {"XTND", "LAST", "HELO"})

ALLOWED = {
    State.AUTHORIZATION: {"USER", "PASS", "APOP", "AUTH", "CAPA", "STLS", "QUIT"},
    State.AUTHORIZATION_USER: {"USER", "PASS", "APOP", "AUTH", "CAPA", "STLS", "QUIT"},
    State.AUTHORIZATION_SASL: set(),
    State.TRANSACTION: {
        "STAT",
        "LIST",
        "RETR",
        "DELE",
        "NOOP",
        "RSET",
        "QUIT",
        "TOP",
        "UIDL",
        "CAPA",
    },
    State.UPDATE: set(),
    State.CLOSED: set(),
}


def test_every_state_has_an_allowed_verbs_entry() -> None:
    assert set(ALLOWED_VERBS) == set(State)


@pytest.mark.parametrize("state", list(State))
def test_allowed_verbs_per_state(state: State) -> None:
    session = in_state(state)
    assert {v for v in ALL_VERBS if session.allows(v)} == ALLOWED[state]


@pytest.mark.parametrize("verb", ["STAT", "LIST", "RETR", "DELE", "TOP", "UIDL", "RSET", "NOOP"])
def test_no_mailbox_access_before_login(verb: str) -> None:
    assert not SessionState().allows(verb)


@pytest.mark.parametrize("verb", ["USER", "PASS", "APOP", "AUTH", "STLS"])
def test_no_second_login_or_stls_after_login(verb: str) -> None:
    assert not in_state(State.TRANSACTION).allows(verb)


def test_allows_expects_upper_case_verbs() -> None:
    # The parser upper-cases keywords; ``allows`` is not a second parser.
    assert SessionState().allows("USER")
    assert not SessionState().allows("user")
