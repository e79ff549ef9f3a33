"""Login handling for a session: USER/PASS, AUTH PLAIN/LOGIN (RFC 1939 s7, RFC 5034, RFC 4616).

The proxy terminates authentication: it learns the username, then logs in to the upstream with
USER/PASS, in one write where the upstream lists PIPELINING (upstream_caps.py).
Passwords and SASL payloads are never logged.

Login is a function of values: each client line returns what should happen (``Reply``,
``Refused`` or ``LoggedIn``); the session alone applies state transitions and writes replies.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from dataclasses import dataclass
from typing import ClassVar

from popproxy.policy import Upstream
from popproxy.policy.decisions import IPAddress, route_for, user_decision
from popproxy.pop3 import limits, replies
from popproxy.pop3.events import Command
from popproxy.pop3.replies import Code
from popproxy.pop3.sasl import (
    MECHANISMS,
    Credentials,
    b64decode_response,
    decode_plain,
    login_challenge,
    valid_login_field,
)
from popproxy.pop3.state import Event
from popproxy.proxy.failure_timing import upstream_key
from popproxy.proxy.lockout_store import StoreUnavailable
from popproxy.proxy.settings import AuditFn, SessionSettings
from popproxy.proxy.upstream import UpstreamConnection, UpstreamError
from popproxy.proxy.upstream_caps import user_pass

log = logging.getLogger("popproxy.auth")

SASL_CANCEL = b"*"  # RFC 5034 section 4: the client aborts the exchange

@dataclass(frozen=True, slots=True)
class Reply:
    """Answer ``data``, after moving the state machine by ``event`` (if any)."""

    data: bytes
    event: Event | None = None


@dataclass(frozen=True, slots=True)
class SaslStarted:
    """An AUTH exchange began (SASL_STARTED): answer ``challenge``, or, if the client gave an
    initial response (RFC 5034 section 4), pass ``initial`` to ``sasl_step`` instead."""

    challenge: bytes
    initial: bytes | None = None


@dataclass(frozen=True, slots=True)
class Refused:
    """The login attempt or AUTH exchange failed: LOGIN_FAILED, ``reply``; then close if
    ``close`` (too many failures)."""

    reply: bytes
    close: bool = False


@dataclass(frozen=True, slots=True)
class LoggedIn:
    """Logged in upstream: LOGIN_OK, then ``AuthHandler.confirm``, then ``reply``."""

    upstream: UpstreamConnection
    route: str  # the upstream's name (metric label, capture)
    user: str
    mechanism: str
    reply: bytes  # the upstream's own +OK


AuthResult = Reply | SaslStarted | Refused | LoggedIn


# One login step: (handler, command, TLS active) -> what the session does next.
_Step = Callable[["AuthHandler", Command, bool], Coroutine[None, None, "AuthResult"]]


async def _answer(result: AuthResult) -> AuthResult:
    """``result`` as a coroutine, for a step that answers without awaiting anything."""
    return result


class AuthHandler:
    """The AUTHORIZATION-state commands that lead to a login.

    Owns only what the exchange itself needs (the USER given, the SASL mechanism, the failure
    count, the username tried); never the session's state machine or its client.
    """

    # Slots: one per connection lives as long as it does (idle memory per session).
    __slots__ = (
        "_client_ip", "_login_user", "_mech", "_peer", "_settings", "_user",
        "audit", "failures", "user",
    )

    mechanisms = MECHANISMS

    def __init__(self, settings: SessionSettings, client_ip: IPAddress | None, peer: str,
                 audit: AuditFn) -> None:
        self._settings = settings
        self._client_ip = client_ip
        self._peer = peer
        self.audit = audit  # the session unsets it when it ends (a reference cycle)
        self._user: bytes | None = None
        self._mech: str | None = None
        self._login_user: bytes | None = None  # LOGIN mechanism: username step done
        self.failures = 0
        self.user: str | None = None  # known after a login attempt, for the audit log

    def reset(self) -> None:
        """Forget everything given so far (STLS: nothing crosses into TLS, RFC 2595 s4)."""
        self._user = None
        self._mech = None
        self._login_user = None

    def command(self, cmd: Command, tls_active: bool) -> Coroutine[None, None, AuthResult]:
        """A login-phase command the session did not answer itself (see ``_STEPS``).

        Not a coroutine itself: it hands over the step's, so the login's frame chain, resumed
        at every await of the upstream login (connect, greeting, answers), is one frame shorter.
        """
        step = self._STEPS.get(cmd.verb)
        if step is None:
            # APOP: the digest covers the upstream's timestamp, which the proxy never shows.
            return _answer(Reply(replies.err("APOP is not supported here; use USER/PASS or AUTH")))
        return step(self, cmd, tls_active)

    async def _user_cmd(self, cmd: Command, tls_active: bool) -> Reply:
        if len(cmd.args) != 1:
            return Reply(replies.err("usage: USER name"))
        self._user = cmd.args[0]
        return USER_ACCEPTED

    def _pass_cmd(self, cmd: Command, tls_active: bool) -> Coroutine[None, None, AuthResult]:
        # Hands over _login's coroutine (one frame less at each await, see ``command``).
        if self._user is None:
            return _answer(Reply(replies.err("USER first")))
        if not cmd.args or not cmd.args[0]:
            return _answer(Reply(replies.err("usage: PASS password")))
        user, self._user = self._user, None
        return self._login(Credentials(user, cmd.args[0]), "USER", tls_active)

    async def _auth_cmd(self, cmd: Command, tls_active: bool) -> Reply | SaslStarted:
        if not cmd.args:  # de-facto mechanism listing (used by Outlook and others)
            lines = [m.encode() for m in self.mechanisms]
            return Reply(replies.multiline(replies.ok("SASL mechanisms follow"), lines))
        mech = cmd.args[0].decode("ascii", "replace").upper()
        if mech not in self.mechanisms or len(cmd.args) > 2:
            return Reply(replies.err(f"unsupported SASL mechanism, use {' or '.join(MECHANISMS)}"))
        self._user = None
        self._mech = mech
        challenge = replies.continuation(login_challenge(0) if mech == "LOGIN" else b"")
        return SaslStarted(challenge, cmd.args[1] if len(cmd.args) == 2 else None)

    # USER/PASS (RFC 1939 s7) and AUTH (RFC 5034 s4); APOP is refused (see command()).
    _STEPS: ClassVar[Mapping[str, _Step]] = {
        "USER": _user_cmd, "PASS": _pass_cmd, "AUTH": _auth_cmd,
    }

    async def sasl_step(self, line: bytes, tls_active: bool) -> AuthResult:
        """One client line inside AUTH."""
        if line == SASL_CANCEL:
            self.abort_sasl()
            return Refused(replies.err("authentication cancelled"))
        decoded = b64decode_response(line)
        if decoded is None:
            self.abort_sasl()
            return Refused(replies.err("invalid base64 in SASL response"))
        if self._mech == "LOGIN" and self._login_user is None:
            self._login_user = decoded
            return Reply(replies.continuation(login_challenge(1)))
        creds = self._credentials(decoded)
        mechanism = self._mech or "PLAIN"
        self.abort_sasl()
        if creds is None:
            self._record("malformed", mechanism)
            return await self._failed(replies.err("malformed credentials", Code.AUTH))
        return await self._login(creds, mechanism, tls_active)

    def _credentials(self, decoded: bytes) -> Credentials | None:
        if self._mech == "PLAIN":
            return decode_plain(decoded)
        user = self._login_user or b""
        if valid_login_field(user) and valid_login_field(decoded):
            return Credentials(user, decoded)
        return None

    def abort_sasl(self) -> None:
        """Leave an AUTH exchange (the session applies LOGIN_FAILED and answers)."""
        self._mech = None
        self._login_user = None

    def _login(self, creds: Credentials, mechanism: str,
               tls_active: bool) -> Coroutine[None, None, AuthResult]:
        """Apply user policy, route, log in upstream: the coroutine that does what is left to
        await (without a lockout store, the upstream login itself: see ``command``)."""
        if not _forwardable(creds):
            self._record("malformed", mechanism)
            return self._failed(replies.err("invalid characters in credentials", Code.AUTH))
        username = self.user = creds.username.decode("utf-8", "replace")
        if self._settings.lockout is not None:
            return self._guarded_login(creds, username, mechanism, tls_active)
        return self._routed_login(creds, username, mechanism, tls_active)

    async def _guarded_login(self, creds: Credentials, username: str, mechanism: str,
                             tls_active: bool) -> AuthResult:
        refused = await self._lockout_refusal(username, mechanism)
        if refused is not None:
            return refused
        return await self._routed_login(creds, username, mechanism, tls_active)

    def _routed_login(self, creds: Credentials, username: str, mechanism: str,
                      tls_active: bool) -> Coroutine[None, None, AuthResult]:
        settings = self._settings
        # Every refusal is answered this long after the lockout check (whose delay does not
        # depend on who says no): see failure_timing.py.
        checked = settings.clock()
        name, target = route_for(settings.policy, username)
        decision = user_decision(settings.policy, username, self._client_ip, tls_active,
                                 mechanism)
        if decision.allowed:
            return self._upstream_login(name, target, creds, username, mechanism, checked)
        # Same reply and timing as a wrong password at the upstream the user is routed
        # to: a policy denial must not tell a guesser that the account exists.
        settings.observer.metrics.policy_denials.labels("user").inc()
        self._record("policy_denied", mechanism, reason=decision.reason)
        return self._refused(AUTH_FAILED, creds, username, checked, target)

    async def _refused(self, reply: bytes, creds: Credentials, username: str, checked: float,
                       target: Upstream) -> Refused:
        """A refused password (by policy or upstream): counted by the lockout, then the floor."""
        if reply is AUTH_FAILED:
            await self._lockout_failed(username, creds.password)
        return await self._failed(reply, checked, self._refusal_floor(target))

    def confirm(self, login: LoggedIn) -> Awaitable[None] | None:
        """After the session entered TRANSACTION (and lifted the login deadline), before the
        +OK: record the success; what to await first (lockout store), else None."""
        lockout, address = self._settings.lockout, self._client_ip
        if lockout is not None and address is not None:
            # Recorded before the +OK, so a client reconnecting at once sees it (Redis).
            return self._confirm_after(lockout.succeeded(login.user, address), login)
        self._record("ok", login.mechanism, upstream=login.route)
        return None

    async def _confirm_after(self, recording: Awaitable[None], login: LoggedIn) -> None:
        await self._guarded(recording)
        self._record("ok", login.mechanism, upstream=login.route)

    def _refusal_floor(self, target: Upstream) -> float:
        """limits.auth_failure_delay, or longer if ``target`` takes longer to refuse."""
        settings = self._settings
        return settings.failure_timing.floor(upstream_key(target),
                                             settings.limits.auth_failure_delay)

    async def _lockout_refusal(self, username: str, mechanism: str) -> Refused | None:
        """Lockout check before anything reaches the upstream (RFC 3206 SYS/TEMP if blocked)."""
        guard, address = self._settings.lockout, self._client_ip
        if guard is None or address is None:
            return None
        try:
            result = await guard.check(username, address)
        except StoreUnavailable:
            self._record("store_unavailable", mechanism)
            return Refused(LOCKOUT_STORE_DOWN)  # back to AUTHORIZATION (also after AUTH)
        if result.action != "block":
            if result.action == "delay":
                self.audit("lockout", action="delay", scope=result.scope,
                            delay=round(result.delay, 3))
            return None
        metrics = self._settings.observer.metrics
        metrics.lockout_blocks.labels(result.scope or "unknown").inc()
        self._record("locked", mechanism, scope=result.scope or "unknown")
        self.audit("lockout", action="block", scope=result.scope)
        # [SYS/TEMP], never [AUTH]: the client should wait, not ask for the password again.
        self.failures += 1
        return Refused(LOCKED, self.failures >= self._settings.limits.max_login_failures)

    async def _lockout_failed(self, username: str, password: bytes) -> None:
        guard, address = self._settings.lockout, self._client_ip
        if guard is not None and address is not None:
            await self._guarded(guard.failed(username, address, password))

    async def _guarded(self, call: Awaitable[None]) -> None:
        try:
            await call
        except StoreUnavailable:
            log.warning("session %s: lockout store unavailable while recording", self._peer)

    async def _upstream_login(self, name: str, target: Upstream, creds: Credentials,
                              username: str, mechanism: str, checked: float) -> AuthResult:
        """Connect to the routed upstream and log in with USER and PASS (``checked``: the
        clock after the lockout check, before routing and the policy checks: microseconds,
        where the latency measured here starts)."""
        settings = self._settings
        observer = settings.observer
        upstream: UpstreamConnection | None = None
        result = "error"  # the result label of the latency (metrics.LOGIN_RESULTS)
        try:
            tls = settings.upstream_tls.get(name)
            upstream = await UpstreamConnection.open(target, tls, settings.upstream_connect)
            if settings.upstream_caps.pipelining((target.host, target.port, target.mode)):
                # The common case awaited right here: a frame less at each await (see command).
                upstream.pipelining = True
                status = await upstream.pipelined_login(creds.username, creds.password)
            else:
                upstream, status = await user_pass(upstream, target, creds, settings.upstream_caps,
                                                   tls, settings.upstream_connect)
            result = "ok" if status.ok else "refused"
        except BaseException as exc:  # also cancelled (login deadline, shutdown): no socket left
            if upstream is not None:
                upstream.close()
            if isinstance(exc, UpstreamError):
                observer.metrics.upstream_errors.labels(name, exc.reason).inc()
                self._record("upstream_error", mechanism, upstream=name, reason=exc.reason)
            raise
        finally:
            observer.metrics.child(observer.metrics.upstream_login_seconds, name, result).observe(
                settings.clock() - checked
            )
        if status.ok:
            return LoggedIn(upstream, name, username, mechanism, status.raw)
        upstream.close()
        reply = _failure_reply(status.raw)
        if reply is AUTH_FAILED:  # the upstream's own failure delay, learned for the floor
            settings.failure_timing.observe(upstream_key(target), settings.clock() - checked)
        self._record("bad_credentials" if reply is AUTH_FAILED else "upstream_refused",
                     mechanism, upstream=name)
        return await self._refused(reply, creds, username, checked, target)

    def _record(self, result: str, mechanism: str, **fields: str) -> None:
        """Count and audit one login attempt (the username goes to the audit log only)."""
        metrics = self._settings.observer.metrics
        metrics.child(metrics.logins, result).inc()
        self.audit("login", result=result, mechanism=mechanism, **fields)
        # DEBUG: the audit log is the record of logins; an INFO line per login costs ~4% CPU.
        log.debug("session %s: login %s", self._peer, result)

    async def _failed(self, reply: bytes, since: float | None = None,
                      floor: float = 0.0) -> Refused:
        if since is not None:
            # One floor for every failed password check (RFC 1939 section 13 suggests a
            # delay): hides whether the upstream or the policy said no.
            delay = floor - (self._settings.clock() - since)
            if delay > 0:
                await asyncio.sleep(delay)
        self.failures += 1
        log.info("session %s: login failed (%d)", self._peer, self.failures)
        if self.failures >= self._settings.limits.max_login_failures:
            return Refused(reply + TOO_MANY_FAILURES, close=True)
        return Refused(reply)


AUTH_FAILED = replies.err("authentication failed", Code.AUTH)
USER_ACCEPTED = Reply(replies.ok("send PASS"), Event.USER_ACCEPTED)  # immutable, so shared
LOCKED = replies.err("too many failed logins, try again later", Code.SYS_TEMP)
LOCKOUT_STORE_DOWN = replies.err("login temporarily unavailable, try again later", Code.SYS_TEMP)
TOO_MANY_FAILURES = replies.err("too many failed logins", Code.AUTH)

# Codes an upstream sends only after the password was right (RFC 2449 s8.1, RFC 3206 s4):
# they reveal nothing to a guesser and tell the client what to do, so they are relayed.
_RELAYED_FAILURE_CODES = (b"[SYS/TEMP]", b"[SYS/PERM]", b"[IN-USE]", b"[LOGIN-DELAY]")
_SP, _NUL, _CR, _LF = b" \0\r\n"  # ints: `int in bytes` scans, `bytes in bytes` fails an int()


def _failure_reply(upstream_reply: bytes) -> bytes:
    """The upstream's -ERR if it carries a post-authentication code, else our fixed reply."""
    text = upstream_reply[4:].lstrip()
    if any(text.startswith(code) for code in _RELAYED_FAILURE_CODES):
        return upstream_reply
    return AUTH_FAILED


def _forwardable(creds: Credentials) -> bool:
    """USER/PASS arguments must fit one upstream command line (RFC 2449 section 4): not
    empty, no NUL/CR/LF, no space in the username (one expression: it runs at every login)."""
    user, password = creds.username, creds.password
    pass_line = len(b"PASS ") + len(password) + len(b"\r\n")  # as Command.render sends it
    return (bool(user) and _SP not in user and _NUL not in user and _CR not in user
            and _LF not in user and bool(password) and _NUL not in password
            and _CR not in password and _LF not in password
            and pass_line <= limits.MAX_COMMAND_LINE)
