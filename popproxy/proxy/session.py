"""One client session: the I/O shell around the sans-io parser, state table and framer."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field

from popproxy.capture.hook import new_recorder, save_capture
from popproxy.capture.store import CaptureOptions
from popproxy.policy import Limits, Listener, Policy
from popproxy.policy.decisions import IPAddress
from popproxy.pop3 import limits, replies
from popproxy.pop3.capa import (
    filter_upstream,
    parse_capa_body,
    proxy_capabilities,
    render_capa,
)
from popproxy.pop3.commands import CommandParser, valid_transaction_args
from popproxy.pop3.errors import ProtocolError
from popproxy.pop3.events import (
    NEED_DATA,
    BadCommand,
    BodyData,
    ClientEvent,
    Command,
    ConnectionClosed,
    EndOfBody,
    SaslResponse,
    StatusLine,
)
from popproxy.pop3.framing import Unstuffer
from popproxy.pop3.replies import Code
from popproxy.pop3.state import Event, SessionState, State
from popproxy.proxy.auth import AuthHandler
from popproxy.proxy.channel import Channel, ChannelClosed
from popproxy.proxy.errors import SessionEnd
from popproxy.proxy.failure_timing import FailureTiming
from popproxy.proxy.lockout_guard import LockoutGuard
from popproxy.proxy.mailbox import MailboxView
from popproxy.proxy.observe import Observer
from popproxy.proxy.scanning import ScanService
from popproxy.proxy.upstream import UpstreamConnection, UpstreamError
from popproxy.proxy.upstream_caps import UpstreamCapabilities

log = logging.getLogger("popproxy.session")

GREETING = replies.ok("POP3 proxy ready")
CLOSE_DRAIN_TIMEOUT = 5.0  # seconds to flush the last replies before closing a session


@dataclass(frozen=True, slots=True)
class SessionSettings:
    """Everything a session needs to know, fixed for its lifetime (a policy reload on SIGHUP
    affects only sessions that start afterwards)."""

    policy: Policy
    listener: Listener
    server_tls: ssl.SSLContext | None  # None: no client-facing TLS configured
    upstream_tls: Mapping[str, ssl.SSLContext | None]  # upstream name -> client context
    observer: Observer
    lockout: LockoutGuard | None = None
    scan: ScanService | None = None
    capture: CaptureOptions | None = None  # popproxy run --capture DIR (docs/capture.md)
    # Shared by all sessions of a server (learned CAPA); tests get a fresh one.
    upstream_caps: UpstreamCapabilities = field(default_factory=UpstreamCapabilities)
    # Shared likewise: how long each upstream takes to refuse a password (auth.py's floor).
    failure_timing: FailureTiming = field(default_factory=FailureTiming)

    @property
    def limits(self) -> Limits:
        return self.policy.limits

    @property
    def handshake_timeout(self) -> float:
        return self.policy.tls.handshake_timeout


class Session:
    """Runs one client connection from greeting to close."""

    # Slots: one per connection lives as long as it does (idle memory per session).
    __slots__ = (
        "_login_timer", "_relayed", "accepted_at", "auth", "capture", "client", "client_ip", "id",
        "mailbox", "parser", "peer", "settings", "state", "upstream", "upstream_name", "user"
    )

    def __init__(
        self, channel: Channel, settings: SessionSettings, client_ip: IPAddress | None, peer: str,
        accepted_at: float | None = None,
    ) -> None:
        """``accepted_at``: loop time the connection was accepted (default: now), from which
        ``limits.login_timeout`` runs."""
        self.client = channel
        self.accepted_at = accepted_at
        self._login_timer: asyncio.Timeout | None = None
        self.settings = settings
        self.client_ip = client_ip
        self.peer = peer
        self.id = "-"  # set by the server from the observer's id source
        self.user: str | None = None  # known after a login attempt, for the audit log
        self._relayed = 0  # body bytes to the client not yet added to the metric
        self.mailbox: MailboxView | None = None  # set at login when scanning is on
        self.upstream_name = "default"  # the routed upstream, set at login
        self.state = SessionState(implicit_tls=settings.listener.mode == "tls")
        self.parser = CommandParser(self.state)  # the state says when lines are SASL responses
        self.upstream: UpstreamConnection | None = None
        self.auth = AuthHandler(self)
        self.capture = new_recorder(settings.capture)  # None unless capturing

    # ---------------------------------------------------------------- lifecycle
    async def run(self) -> None:
        """Serve the client; always closes both sides, never sending QUIT on its own."""
        try:
            async with self._login_deadline():
                if self.settings.listener.mode == "tls":
                    await self._handshake()
                self.write(GREETING)
                await self._serve()
        except SessionEnd:
            pass
        except (ssl.SSLError, ChannelClosed) as exc:
            log.info("session %s: TLS failed: %s", self.peer, exc.__class__.__name__)
        except UpstreamError as exc:
            log.warning("session %s: upstream failed: %s", self.peer, exc)
            self.audit("upstream_error", error=str(exc), reason=exc.reason)
            if self.state.authenticated:  # failures during login are counted by auth
                metrics = self.settings.observer.metrics
                metrics.upstream_errors.labels(self.upstream_name, exc.reason).inc()
            self.write(replies.err("upstream server unavailable, try again later", Code.SYS_TEMP))
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
            if self.capture is not None and self.settings.capture is not None:
                await save_capture(self, self.capture, self.settings.capture)

    def _login_deadline(self) -> asyncio.Timeout:
        """Until login, one deadline for everything (TLS handshake, STLS, AUTH exchanges, a
        client dripping a byte at a time): the idle timeout alone would let a client that never
        logs in hold a session slot for as long as it keeps sending (a slow-loris).  Lifted
        by ``login_succeeded``."""
        loop = asyncio.get_running_loop()
        start = loop.time() if self.accepted_at is None else self.accepted_at
        self._login_timer = asyncio.timeout_at(start + self.settings.limits.login_timeout)
        return self._login_timer

    def login_succeeded(self) -> None:
        """Logged in: from now on only the idle timeout applies (RFC 1939 section 3)."""
        if self._login_timer is not None:
            self._login_timer.reschedule(None)

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
        if self.client.write_paused:
            self.client.abort()  # it stopped reading: nothing more will get through
            return
        with contextlib.suppress(ConnectionError, OSError, TimeoutError):
            async with asyncio.timeout(CLOSE_DRAIN_TIMEOUT):
                await self.client.drain()
        self.client.close()

    def write(self, data: bytes) -> None:
        if self.capture is not None:
            self.capture.from_proxy(data)
        self.client.write(data)

    async def _handshake(self) -> None:
        """Implicit TLS: the channel started the handshake when the connection opened."""
        if self.settings.server_tls is None:
            raise SessionEnd
        await self._await_handshake(self.client.start_implicit_tls(), "implicit")

    async def _await_handshake(self, handshake: asyncio.Future[None], kind: str) -> None:
        """Wait for a client handshake, counting its outcome by kind and TLS version."""
        metrics = self.settings.observer.metrics
        try:
            async with asyncio.timeout(self.settings.handshake_timeout):
                await handshake
        except BaseException as exc:
            login_late = self._login_timer is not None and self._login_timer.expired()
            result = "timeout" if isinstance(exc, TimeoutError) or login_late else "failed"
            metrics.tls_handshakes.labels(kind, "none", result).inc()
            self.audit("tls", mode=kind, result=result, error=exc.__class__.__name__)
            raise
        sslobj = self.client.ssl_object()
        version = (sslobj.version() if sslobj else None) or "unknown"
        metrics.tls_handshakes.labels(kind, version, "ok").inc()
        self.audit("tls", mode=kind, result="ok", version=version)

    def audit(self, event: str, **fields: object) -> None:
        """One audit event for this session (client address and user filled in)."""
        self.settings.observer.audit.event(event, self.id, client=str(self.client_ip),
                                           user=self.user, **fields)

    @property
    def login_allowed(self) -> bool:
        """RFC 2595 section 2.3: by default no password is accepted before TLS."""
        return self.state.tls_active or self.settings.listener.allow_plaintext_login

    async def _serve(self) -> None:
        while True:
            event = self.parser.next_event()
            if event is NEED_DATA:
                await self._drain()
                await self._read_client()
                continue
            await self._handle(event)
            if self.state.state in (State.UPDATE, State.CLOSED):
                return
            if self.client.write_paused:  # pipelined commands, replies unread: bound memory
                await self._drain()

    async def _drain(self) -> None:
        """Wait for a client that is slow to read, but not forever: one that stops reading
        is logged out after the idle timeout like one that stops writing (RFC 1939 s3)."""
        if self.client.write_paused:
            async with asyncio.timeout(self.settings.limits.idle_timeout):
                await self.client.drain()

    async def drain_client(self) -> None:
        """``_drain`` for the mailbox view's long writes."""
        await self._drain()

    async def _read_client(self) -> None:
        # RFC 1939 section 3: the autologout timer restarts with every client activity.
        data = await self.client.read(timeout=self.settings.limits.idle_timeout)
        if self.capture is not None:
            # Every complete line read so far has been handled: the state says whether the
            # next line is an AUTH response (to be redacted).
            self.capture.from_client(data, sasl=self.state.in_sasl)
        self.parser.receive_data(data)

    # ---------------------------------------------------------------- dispatch
    async def _handle(self, event: ClientEvent) -> None:
        if isinstance(event, ConnectionClosed):
            raise SessionEnd
        if isinstance(event, BadCommand):
            self._bad_command(event)
        elif isinstance(event, SaslResponse):
            await self.auth.sasl_step(event.data)
        elif not self.state.allows(event.verb):
            # Unknown or out-of-state verbs count toward MAX_BAD_COMMANDS like malformed
            # lines: a probe gains nothing by sending well-formed nonsense.
            self.parser.refuse_last_command()

            self.write(replies.err(f"{event.verb} is not valid in this state"))
            self._close_if_too_many_bad()
        elif self.state.before_login:
            await self._before_login(event)
        elif self.capture is not None:
            with self.capture.reply(event.verb):  # RETR/TOP bodies left out of the capture
                await self._transaction(event)
        else:
            await self._transaction(event)

    def _bad_command(self, event: BadCommand) -> None:
        if self.state.in_sasl:
            # An over-long SASL line ends the AUTH exchange (RFC 5034 section 4: the server
            # rejects it), so the client's next line is read as a command again.
            self.auth.abort_sasl()
        self.write(replies.err(f"{event.reason.value}", Code.SYS_PERM))
        self._close_if_too_many_bad()

    def _close_if_too_many_bad(self) -> None:
        if self.parser.bad_count >= limits.MAX_BAD_COMMANDS:

            self.write(replies.err("too many bad commands, closing", Code.SYS_PERM))
            raise SessionEnd

    async def _before_login(self, cmd: Command) -> None:
        if cmd.verb == "CAPA":
            self.write(replies.multiline(replies.ok("capability list follows"), self._capa()))
        elif cmd.verb == "QUIT":
            self.state.apply(Event.QUIT)
            self.write(replies.ok("bye"))
        elif cmd.verb == "STLS":
            await self._stls()
        elif not self.login_allowed:
            # [SYS/PERM], not [AUTH]: clients then report the problem instead of asking for
            # the password again and again (RFC 3206 section 4).
            self.settings.observer.metrics.login_before_tls.labels(cmd.verb).inc()
            self.audit("login_before_tls", command=cmd.verb)
            self.write(replies.err("TLS is required before login: use STLS", Code.SYS_PERM))
        else:
            await self.auth.command(cmd)

    def _capa(self) -> list[bytes]:
        # RFC 2449 section 6 / RFC 2595 section 4: what this proxy offers before login.
        return proxy_capabilities(stls_offered=self._stls_offered(),
                                  login_allowed=self.login_allowed, mechanisms=self.auth.mechanisms)

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
        await self._await_handshake(handshake, "stls")

    async def _transaction(self, cmd: Command) -> None:
        if not valid_transaction_args(cmd):
            self.write(replies.err(f"wrong arguments for {cmd.verb} (RFC 1939)"))
        elif cmd.verb == "CAPA":
            await self._relay_capa(cmd)
        elif self.mailbox is not None and cmd.verb in ("STAT", "LIST", "RETR", "TOP"):
            await self._scanned(cmd, self.mailbox)
        else:
            if cmd.verb == "QUIT":
                # Only a client QUIT reaches the upstream (RFC 1939 section 6: UPDATE state).
                self.state.apply(Event.QUIT)
            status = await self.relay(cmd)
            if self.mailbox is not None and status.ok:
                self._track_deletions(cmd, self.mailbox)

    async def _scanned(self, cmd: Command, mailbox: MailboxView) -> None:
        """STAT/LIST/RETR/TOP answered from scan verdicts (sizes match what RETR returns)."""
        numbers = [int(a) for a in cmd.args]
        if cmd.verb == "STAT":
            self.write(await mailbox.stat())
        elif cmd.verb == "LIST":
            self.write(await mailbox.list(numbers[0] if numbers else None))
        else:
            await mailbox.deliver(numbers[0], numbers[1] if cmd.verb == "TOP" else None)

    @staticmethod
    def _track_deletions(cmd: Command, mailbox: MailboxView) -> None:
        if cmd.verb == "DELE":
            mailbox.deleted.add(int(cmd.args[0]))
        elif cmd.verb == "RSET":
            mailbox.deleted.clear()

    # ---------------------------------------------------------------- relaying
    def _connected(self) -> UpstreamConnection:
        if self.upstream is None:
            raise UpstreamError("no upstream connection in TRANSACTION state")
        return self.upstream

    async def relay(self, cmd: Command) -> StatusLine:
        """Send ``cmd`` upstream and stream the answer to the client unchanged."""
        upstream = self._connected()
        upstream.send(cmd)
        status = await upstream.next_event()
        if not isinstance(status, StatusLine):
            raise UpstreamError("upstream closed the connection mid-response", "closed")
        self.write(status.raw)
        if status.multiline:
            await self.relay_body()
        return status

    async def relay_body(self) -> None:
        """Stream a multi-line body (still dot-stuffed) and its terminator to the client."""
        upstream = self._connected()
        while True:
            event = await upstream.next_event()
            if isinstance(event, BodyData):
                self.write(event.data)
                self._relayed += len(event.data)
                await self._drain()
            elif isinstance(event, EndOfBody):
                self.write(b".\r\n")
                self._count_relayed()
                return
            else:
                raise UpstreamError("upstream closed the connection mid-response", "closed")

    def _count_relayed(self) -> None:
        # Added per response, not per chunk: one metric update per RETR keeps the hot loop lean.
        self.settings.observer.metrics.bytes_relayed.labels("to_client").inc(self._relayed)
        self._relayed = 0

    async def _relay_capa(self, cmd: Command) -> None:
        upstream = self._connected()
        upstream.send(cmd)
        status = await upstream.next_event()
        if not isinstance(status, StatusLine):
            raise UpstreamError("upstream closed the connection")
        if not status.multiline:
            self.write(status.raw)
            return
        unstuffer, body = Unstuffer(), bytearray()
        while not isinstance(event := await upstream.next_event(), EndOfBody):
            if not isinstance(event, BodyData):
                raise UpstreamError("upstream closed the connection mid-response")
            body += unstuffer.feed(event.data)
            if len(body) > limits.MAX_CAPA_LINE * limits.MAX_CAPA_LINES:
                raise UpstreamError("CAPA response too large")
        try:
            caps = filter_upstream(parse_capa_body(bytes(body)))
        except ProtocolError as exc:
            raise UpstreamError(f"bad CAPA response: {exc}") from None
        self.write(replies.multiline(status.raw, render_capa(caps)))
