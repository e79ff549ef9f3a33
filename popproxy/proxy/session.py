"""One client session: the I/O shell around the sans-io parser, state table and framer."""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Awaitable, Callable, Mapping
from typing import ClassVar

from popproxy.capture.hook import FlowFacts, new_recorder, save_capture
from popproxy.policy.decisions import DEFAULT_UPSTREAM, IPAddress
from popproxy.pop3 import limits, replies
from popproxy.pop3.capa import proxy_capabilities
from popproxy.pop3.commands import CommandParser, valid_transaction_args
from popproxy.pop3.events import (
    NEED_DATA,
    BadCommand,
    ClientEvent,
    Command,
    ConnectionClosed,
)
from popproxy.pop3.replies import Code
from popproxy.pop3.state import ALLOWED_VERBS, Event, SessionState, State
from popproxy.proxy.auth import AuthHandler, AuthResult, LoggedIn, Refused, Reply
from popproxy.proxy.channel_errors import ChannelClosed
from popproxy.proxy.client_channel import ClientChannel
from popproxy.proxy.client_handshake import await_client_handshake
from popproxy.proxy.errors import SessionEnd
from popproxy.proxy.relay import ClientWriter, relay, relay_capa
from popproxy.proxy.released import ReleasingMailbox
from popproxy.proxy.settings import SessionSettings, unaudited
from popproxy.proxy.upstream import (
    UpstreamConnection,
    UpstreamError,
)
from popproxy.proxy.verdict_answers import FROM_VERDICTS, TRACKED

__all__ = ["Session", "SessionSettings"]

log = logging.getLogger("popproxy.session")

GREETING = replies.ok("POP3 proxy ready")


class Session:
    """Runs one client connection from greeting to close.

    The one owner of the session's state: only this class applies state transitions and
    writes replies.  ``AuthHandler`` returns what a login line leads to, ``MailboxView`` and
    ``relay`` get the upstream connection and the client writer, never the session.
    """

    # Slots: one per connection lives as long as it does (idle memory per session).
    __slots__ = ("_login_timer", "accepted_at", "auth", "client", "client_ip", "id", "mailbox",
                 "out", "parser", "peer", "settings", "state", "upstream", "upstream_name")

    def __init__(self, channel: ClientChannel, settings: SessionSettings,
                 client_ip: IPAddress | None, peer: str, accepted_at: float | None = None) -> None:
        """``accepted_at``: loop time the connection was accepted (default: now), from which
        ``limits.login_timeout`` runs."""
        self.client = channel
        self.accepted_at = accepted_at
        self._login_timer: asyncio.Timeout | None = None
        self.settings = settings
        self.client_ip = client_ip
        self.peer = peer
        self.id = "-"  # set by the server from the observer's id source
        self.mailbox: ReleasingMailbox | None = None  # at the first command after login (scan on)
        self.upstream_name = DEFAULT_UPSTREAM  # the routed upstream, set at login
        self.state = SessionState(implicit_tls=settings.listener.mode == "tls")
        self.parser = CommandParser(self.state)  # the state says when lines are SASL responses
        self.upstream: UpstreamConnection | None = None
        self.auth = AuthHandler(settings, client_ip, peer, self.audit)
        # Replies go through here (and into the capture, if on: None unless capturing).
        self.out = ClientWriter(channel, new_recorder(settings.capture),
                                settings.policy.limits.idle_timeout)

    # ---------------------------------------------------------------- lifecycle
    async def run(self) -> None:
        """Serve the client; always closes both sides, never sending QUIT on its own."""
        try:
            async with self._login_deadline():
                if self.settings.listener.mode == "tls":
                    await self._handshake()
                self.write(GREETING)
                idle_timeout, out = self.settings.policy.limits.idle_timeout, self.out
                # An idle session waits in this frame, no helper's: a nested frame is ~0.25 KiB
                # per idle session.  RFC 1939 s3: the autologout timer restarts on activity.
                while await self._handle_received():
                    data = await self.client.read(timeout=idle_timeout)
                    if out.capture is not None:  # the state says if it is an AUTH response
                        out.capture.from_client(data, sasl=self.state.in_sasl)  # (redacted)
                    self.parser.receive_data(data)  # (here, not in a helper: a call a read)
        except SessionEnd:
            pass
        except (ssl.SSLError, ChannelClosed) as exc:
            log.info("session %s: TLS failed: %s", self.peer, exc.__class__.__name__)
        except UpstreamError as exc:
            self._upstream_failed(exc)
        except TimeoutError:
            if self._login_timer is not None and self._login_timer.expired():
                self._login_expired()
            else:
                self.write(replies.err("autologout: idle for too long", Code.SYS_TEMP))
        except (ConnectionError, OSError) as exc:
            log.info("session %s: client connection lost: %s", self.peer, exc.__class__.__name__)
        except Exception:  # a bug: log it, close this session, keep serving the others
            log.exception("session %s: internal error", self.peer)
            self.write(replies.err("internal error", Code.SYS_TEMP))
        finally:
            await self._close()
            capture = self.out.capture
            if capture is not None and self.settings.capture is not None:
                await save_capture(self._flow_facts(), capture, self.settings.capture)

    def _upstream_failed(self, exc: UpstreamError) -> None:
        log.warning("session %s: upstream failed: %s", self.peer, exc)
        self.audit("upstream_error", error=str(exc), reason=exc.reason)
        if self.state.authenticated:  # failures during login are counted by auth
            self.settings.observer.metrics.upstream_errors.labels(self.upstream_name,
                                                                  exc.reason).inc()
        self.write(replies.err("upstream server unavailable, try again later", Code.SYS_TEMP))

    def _flow_facts(self) -> FlowFacts:
        policy, tls = self.settings.policy, None
        if self.state.tls_active:
            sslobj = self.client.ssl_object()
            tls = (sslobj.version() if sslobj is not None else None) or "unknown"
        return FlowFacts(self.id, self.peer, self.client_ip, self.auth.user,
                         self.settings.listener,
                         self.upstream_name if self.upstream is not None else None,
                         {DEFAULT_UPSTREAM: policy.upstream, **policy.upstreams}, tls)

    def _login_deadline(self) -> asyncio.Timeout:
        """Until login (lifted at LOGIN_OK), one deadline for everything (TLS handshake, STLS,
        AUTH exchanges, a client dripping a byte at a time): the idle timeout alone would let a
        client that never logs in hold a session slot while it keeps sending (a slow-loris)."""
        start = asyncio.get_running_loop().time() if self.accepted_at is None else self.accepted_at
        # (policy.limits: what settings.limits returns, without the property's call; so above)
        self._login_timer = asyncio.timeout_at(start + self.settings.policy.limits.login_timeout)
        return self._login_timer

    def _login_expired(self) -> None:
        """Past the login deadline: the upstream was never logged in to, so nothing is lost."""
        self.settings.observer.metrics.logins.labels("timeout").inc()
        self.audit("login", result="timeout", limit=self.settings.limits.login_timeout)
        log.info("session %s: no login within %.0fs, closing", self.peer,
                 self.settings.limits.login_timeout)
        if not self.client.handshaking:  # mid-handshake, a reply would be garbage to the client
            self.write(replies.err("login took too long, closing", Code.SYS_TEMP))

    async def _close(self) -> None:
        if self.upstream is not None:
            self.upstream.close()
        if self.mailbox is not None:
            self.mailbox.close()  # its spooled copies
        # The mailbox view and the auth handler call back self.audit: unlinked, reference counting
        # frees the session now, not the cyclic GC later (settings.unaudited says why).
        self.mailbox, self.auth.audit = None, unaudited
        if self.client.write_paused:
            self.client.abort()  # it stopped reading: nothing more will get through
            return
        # Not paused: drain() returns at once (raising if the connection is gone), no timer.
        try:  # noqa: SIM105  (contextlib.suppress: three Python calls at every session's end)
            await self.client.drain()
        except (ConnectionError, OSError):
            pass
        self.client.close()

    def write(self, data: bytes) -> None:
        self.out.write(data)

    async def _handshake(self) -> None:
        """Implicit TLS: the channel started the handshake when the connection opened."""
        if self.settings.server_tls is None:
            raise SessionEnd
        await await_client_handshake(self.client.start_implicit_tls(), "implicit", self.settings,
                                     self.client, self.peer, self.audit, self._login_timer)

    def audit(self, event: str, **fields: object) -> None:
        """One audit event for this session (client address and user filled in)."""
        audit = self.settings.observer.audit
        if audit.enabled:  # no audit log: not even the address as text
            audit.event(event, self.id, client=str(self.client_ip), user=self.auth.user, **fields)

    @property
    def login_allowed(self) -> bool:
        """RFC 2595 section 2.3: by default no password is accepted before TLS."""
        return self.state.tls_active or self.settings.listener.allow_plaintext_login

    async def _handle_received(self) -> bool:
        """Handle the complete commands received: True when input is needed, False at the end."""
        state = self.state
        while (event := self.parser.next_event()) is not NEED_DATA:
            if (step := self._handle(event)) is not None:
                await step
            if state.state in (State.UPDATE, State.CLOSED):
                return False
            if self.client.write_paused:  # pipelined commands, replies unread: bound memory
                await self.out.drain()
        if self.client.write_paused:
            await self.out.drain()
        if self.upstream is not None and not self.client.unread:
            self.upstream.rest()  # idle till the next command: its socket is not watched
        return True

    # ---------------------------------------------------------------- state
    def _apply(self, result: AuthResult) -> Awaitable[None] | None:
        """Carry out what a login line led to (the common results tested first); what is
        left to await, if anything (most results need none: no coroutine for them)."""
        if isinstance(result, Reply):
            if result.event is not None:
                self.state.apply(result.event)
            self.write(result.data)
        elif isinstance(result, LoggedIn):
            if (recording := self._logged_in(result)) is not None:  # confirm's lockout store
                return self._reply_after(recording, result.reply)
            self.write(result.reply)
        elif isinstance(result, Refused):
            self.state.apply(Event.LOGIN_FAILED)  # back to AUTHORIZATION (also after AUTH)
            self.write(result.reply)
            if result.close:
                raise SessionEnd
        else:
            self.state.apply(Event.SASL_STARTED)  # lines are SASL responses now (RFC 5034 s4)
            if result.initial is None:
                self.write(result.challenge)
            else:
                return self._sasl_step(result.initial)
        return None

    async def _reply_after(self, recording: Awaitable[None], reply: bytes) -> None:
        await recording
        self.write(reply)

    async def _sasl_step(self, data: bytes) -> None:
        """A SASL response (or AUTH's initial one) to the auth handler, and its result."""
        step = self._apply(await self.auth.sasl_step(data, self.state.tls_active))
        if step is not None:
            await step

    def _logged_in(self, login: LoggedIn) -> Awaitable[None] | None:
        self.upstream, self.upstream_name = login.upstream, login.route
        self.state.apply(Event.LOGIN_OK)
        # From now on only the idle timeout applies (RFC 1939 section 3).  No await since the
        # upstream said +OK: the login deadline cannot cut in after the upstream login.
        if self._login_timer is not None:
            self._login_timer.reschedule(None)
        return self.auth.confirm(login)

    # ---------------------------------------------------------------- dispatch
    def _handle(self, event: ClientEvent) -> Awaitable[None] | None:
        """Handle ``event``; what is left to await, if anything: the command's own coroutine, not
        one around it (a frame less per command and per resume while it waits, issue 18)."""
        state = self.state
        if isinstance(event, Command):  # (the common event first)
            if event.verb not in ALLOWED_VERBS[state.state]:  # state.allows(verb), inlined
                # Unknown or out-of-state verbs count toward MAX_BAD_COMMANDS like malformed
                # lines: a probe gains nothing by sending well-formed nonsense.
                self.parser.refuse_last_command()
                self.write(replies.err(f"{event.verb} is not valid in this state"))
                self._close_if_too_many_bad()
            elif state.state is not State.TRANSACTION:  # (before login: the other states
                return self._before_login(event)  # allowing a command are AUTHORIZATION[_USER])
            elif self.out.capture is not None:
                return self._captured_transaction(event)
            else:
                return self._transaction(event)
        elif isinstance(event, ConnectionClosed):
            raise SessionEnd
        elif isinstance(event, BadCommand):
            self._bad_command(event)
        else:  # a SaslResponse: a line inside AUTH (RFC 5034 section 4)
            return self._sasl_step(event.data)
        return None

    async def _captured_transaction(self, cmd: Command) -> None:
        assert self.out.capture is not None
        with self.out.capture.reply(cmd.verb):  # RETR/TOP bodies left out of the capture
            await self._transaction(cmd)

    def _bad_command(self, event: BadCommand) -> None:
        if self.state.state is State.AUTHORIZATION_SASL:
            # An over-long SASL line ends the AUTH exchange (RFC 5034 section 4: the server
            # rejects it), so the client's next line is read as a command again.
            self.auth.abort_sasl()
            self.state.apply(Event.LOGIN_FAILED)
        self.write(replies.err(f"{event.reason.value}", Code.SYS_PERM))
        self._close_if_too_many_bad()

    def _close_if_too_many_bad(self) -> None:
        if self.parser.bad_count >= limits.MAX_BAD_COMMANDS:
            self.write(replies.err("too many bad commands, closing", Code.SYS_PERM))
            raise SessionEnd

    def _before_login(self, cmd: Command) -> Awaitable[None] | None:
        local = self._LOGIN_PHASE_LOCAL.get(cmd.verb)
        if local is not None:
            return local(self)
        if self.login_allowed:
            return self._login_step(cmd)
        # [SYS/PERM], not [AUTH]: clients then report the problem instead of asking for the
        # password again and again (RFC 3206 section 4).
        self.settings.observer.metrics.login_before_tls.labels(cmd.verb).inc()
        self.audit("login_before_tls", command=cmd.verb)
        self.write(replies.err("TLS is required before login: use STLS", Code.SYS_PERM))
        return None

    async def _login_step(self, cmd: Command) -> None:
        if (step := self._apply(await self.auth.command(cmd, self.state.tls_active))) is not None:
            await step

    # CAPA and QUIT are answered at once: no coroutine (nothing to await).
    def _local_capa(self) -> None:
        self.write(replies.multiline(replies.ok("capability list follows"), self._capa()))

    def _local_quit(self) -> None:
        self.state.apply(Event.QUIT)
        self.write(replies.ok("bye"))

    def _capa(self) -> list[bytes]:
        # RFC 2449 section 6 / RFC 2595 section 4: what this proxy offers before login.
        return proxy_capabilities(stls_offered=self._stls_offered(),
                                  login_allowed=self.login_allowed,
                                  mechanisms=AuthHandler.mechanisms)

    def _stls_offered(self) -> bool:
        return (
            self.settings.listener.mode == "starttls"
            and self.settings.server_tls is not None
            and not self.state.tls_active
        )

    async def _stls(self) -> None:
        """RFC 2595 section 4: STLS once, before login; TLS starts right after +OK CRLF."""
        if self.state.tls_active:
            self.write(replies.err("TLS is already active"))
            return
        tls = self.settings.server_tls
        if not self._stls_offered() or tls is None:
            self.write(replies.err("STLS is not offered on this listener"))
            return
        if self.parser.buffered() or self.client.unread:
            # CVE-2011-0411: bytes sent after STLS would run inside TLS as if the client had
            # sent them there.  We close the connection (rather than discard) so an injected
            # command can never take effect.
            log.warning("session %s: plaintext after STLS, closing (CVE-2011-0411)", self.peer)
            self.settings.observer.metrics.stls_injections.inc()
            self.audit("stls_injection", buffered=self.parser.buffered() + self.client.unread)
            self.write(replies.err("data after STLS is not allowed, closing", Code.SYS_PERM))
            raise SessionEnd
        self.write(replies.ok("begin TLS negotiation"))
        # No await between the +OK and the switch: any byte after +OK CRLF is TLS.
        handshake = self.client.switch_to_tls(tls, server_side=True)
        self.state.apply(Event.STLS_DONE)
        self.auth.reset()
        await await_client_handshake(handshake, "stls", self.settings, self.client, self.peer,
                                     self.audit, self._login_timer)

    # Answered by the proxy itself before login (RFC 2449 s5, RFC 1939 s6, RFC 2595 s4); any
    # other verb the state allows there is a login step for AuthHandler.
    _LOGIN_PHASE_LOCAL: ClassVar[Mapping[str, Callable[[Session], Awaitable[None] | None]]] = {
        "CAPA": _local_capa,
        "QUIT": _local_quit,
        "STLS": _stls,
    }

    async def _transaction(self, cmd: Command) -> None:
        upstream = self.upstream
        if upstream is None:  # TRANSACTION is entered only with an upstream (_logged_in)
            raise AssertionError("TRANSACTION state without an upstream connection")
        mailbox, scan, user = self.mailbox, self.settings.scan, self.auth.user
        from_verdicts = FROM_VERDICTS.get(cmd.verb)
        if mailbox is None and from_verdicts is not None and scan is not None and user is not None:
            # Not at login (~1 KiB idle), nor for a verb it does not answer: until a command
            # goes through it, nothing was deleted for QUIT or RSET to track (TRACKED).
            mailbox = self.mailbox = ReleasingMailbox(
                upstream, self.out, scan, self.upstream_name, user, self.audit,
                self.settings.observer.metrics)
        if not valid_transaction_args(cmd):
            self.write(replies.err(f"wrong arguments for {cmd.verb} (RFC 1939)"))
        elif cmd.verb == "CAPA":
            await relay_capa(upstream, self.out, cmd)  # filtered (RFC 2449 s6: our own CAPA)
        elif from_verdicts is not None and mailbox is not None:
            await from_verdicts(mailbox, self.out, list(map(int, cmd.args)))
        else:
            if cmd.verb == "QUIT":
                # Only a client QUIT reaches the upstream (RFC 1939 section 6: UPDATE state).
                self.state.apply(Event.QUIT)
            status, relayed = await relay(upstream, self.out, cmd)
            if relayed:
                # Added per response, not per chunk: one metric update per RETR keeps the
                # hot loop lean.
                self.settings.observer.metrics.bytes_relayed.labels("to_client").inc(relayed)
            track = TRACKED.get(cmd.verb)
            if track is not None and mailbox is not None and status.ok:
                track(mailbox, cmd)
