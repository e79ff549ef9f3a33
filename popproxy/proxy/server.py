"""Listeners, connect-time policy, session caps, TLS and policy reload, graceful shutdown."""

from __future__ import annotations

import asyncio
import functools
import logging
import ssl
import time
from collections import Counter
from typing import Any

from popproxy.capture.store import CaptureOptions
from popproxy.metrics import KNOWN_LABELS
from popproxy.policy import Listener, Policy, Upstream
from popproxy.policy.decisions import (
    DEFAULT_UPSTREAM,
    IPAddress,
    connect_decision,
    in_networks,
    parse_address,
)
from popproxy.policy.lockout import source_network
from popproxy.pop3 import replies
from popproxy.pop3.replies import Code
from popproxy.proxy.channel import Channel
from popproxy.proxy.failure_timing import FailureTiming
from popproxy.proxy.lockout_guard import LockoutGuard
from popproxy.proxy.observe import Observer
from popproxy.proxy.scanning import ScanService
from popproxy.proxy.session import Session, SessionSettings
from popproxy.proxy.tasks import spawn
from popproxy.proxy.tls import ServerTls, TlsConfigError, upstream_context
from popproxy.proxy.upstream_caps import UpstreamCapabilities
from popproxy.wire.proxyproto import ProxyProtocolError

log = logging.getLogger("popproxy.server")

# popproxy_lockouts_active is recomputed on every login attempt and, so that it falls to 0 when
# blocks expire on a quiet server, this often (seconds) in the background.
LOCKOUT_GAUGE_INTERVAL = 15.0
# Said to a session still open when the shutdown grace ends (Dovecot says the same at its
# shutdown): SYS/TEMP (RFC 3206 section 4) tells the client to come back, not to re-ask for
# the password.
SHUTDOWN_NOTICE = replies.err("server shutting down", Code.SYS_TEMP)


def _upstream_contexts(policy: Policy) -> dict[str, ssl.SSLContext | None]:
    """One verified client context per upstream that speaks TLS."""
    upstreams: dict[str, Upstream] = {DEFAULT_UPSTREAM: policy.upstream, **policy.upstreams}
    contexts: dict[str, ssl.SSLContext | None] = {}
    for name, upstream in upstreams.items():
        contexts[name] = None if upstream.mode == "plain" else upstream_context(upstream)
        if upstream.mode != "plain" and not upstream.verify:
            log.warning(
                "upstream %s: certificate verification is OFF (verify: false): "
                "anyone on the path can read users' passwords", name,
            )
    return contexts


class ProxyServer:
    """Owns the listening sockets, the current policy and TLS contexts, and live sessions."""

    lockout_gauge_interval = LOCKOUT_GAUGE_INTERVAL  # tests set a shorter one before start()

    def __init__(self, config: Policy, observer: Observer | None = None,
                 capture: CaptureOptions | None = None) -> None:
        self.config = config
        self.capture = capture  # popproxy run --capture DIR: every session recorded
        self.observer = observer if observer is not None else Observer()
        needs_tls = any(lst.mode != "plain" for lst in config.listeners)
        self.server_tls = ServerTls(config.tls, config.state_dir) if needs_tls else None
        self.upstream_tls = _upstream_contexts(config)
        self.upstream_caps = UpstreamCapabilities()
        self.failure_timing = FailureTiming()  # kept across policy reloads, like upstream_caps
        self.lockout = self._make_guard(config)
        self.scan = ScanService(config.scan, config.state_dir, self.observer) if (
            config.scan.enabled) else None
        for listener in config.listeners:
            self.observer.metrics.prepare_listener(listener.name)
        for upstream in self.upstream_tls:
            self.observer.metrics.prepare_upstream(upstream)
        self._servers: list[asyncio.AbstractServer] = []
        self._sessions: set[asyncio.Task[Any]] = set()
        self._channels: dict[asyncio.Task[Any], Channel] = {}  # each session's client side
        self._per_ip: Counter[str] = Counter()  # sessions per source network (see _source)
        self.ports: dict[str, int] = {}  # listener name -> bound port (useful with port 0)
        self._gauge_task: asyncio.Task[Any] | None = None
        self.refusal = ""  # why the last reload_policy/reload_tls was refused (for sd_notify)

    def _make_guard(self, config: Policy) -> LockoutGuard | None:
        if not config.lockout.enabled:
            return None
        return LockoutGuard.from_policy(config.lockout, config.state_dir, self.observer)

    def _listener(self, name: str) -> Listener:
        return next(lst for lst in self.config.listeners if lst.name == name)

    def _settings(self, listener: Listener) -> SessionSettings:
        server_tls = None
        if listener.mode != "plain" and self.server_tls is not None:
            server_tls = self.server_tls.context_for(listener.tls_min_version)
        return SessionSettings(
            policy=self.config, listener=listener, server_tls=server_tls,
            upstream_tls=self.upstream_tls, observer=self.observer, lockout=self.lockout,
            scan=self.scan, upstream_caps=self.upstream_caps, capture=self.capture,
            failure_timing=self.failure_timing,
        )

    async def start(self, port_overrides: dict[str, int] | None = None) -> None:
        loop = asyncio.get_running_loop()
        for listener in self.config.listeners:
            port = (port_overrides or {}).get(listener.name, listener.port)
            server = await loop.create_server(
                functools.partial(self._new_channel, listener.name),
                listener.host,
                port,
                reuse_address=True,
            )
            self._servers.append(server)
            self.ports[listener.name] = server.sockets[0].getsockname()[1]
            log.info("listening: %s on %s:%d (%s)", listener.name, listener.host,
                     self.ports[listener.name], listener.mode)
        self._gauge_task = spawn(self._refresh_lockout_gauge(), "lockout-gauge")

    async def _refresh_lockout_gauge(self) -> None:
        """Until stop(): expired blocks leave popproxy_lockouts_active without a new login."""
        while True:
            await asyncio.sleep(self.lockout_gauge_interval)
            if self.lockout is not None:
                self.lockout.refresh_gauge()
            else:  # lockouts turned off by a reload: nothing is blocked any more
                for labels in KNOWN_LABELS["lockouts_active"]:
                    self.observer.metrics.lockouts_active.labels(*labels).set(0)

    def _new_channel(self, listener_name: str) -> Channel:
        # The policy in force when the connection arrives is the one the session keeps.
        settings = self._settings(self._listener(listener_name))
        implicit = settings.server_tls if settings.listener.mode == "tls" else None
        channel = Channel(implicit, proxy_header=settings.listener.proxy_protocol is not None)
        name = f"session-{listener_name}"
        channel.connected.add_done_callback(lambda _: spawn(self._serve(channel, settings), name))
        return channel

    def _source(self, client_ip: IPAddress) -> str:
        """What ``max_sessions_per_ip`` counts: a source network as the lockout counters see
        it (``lockout.ipv4_prefix``/``ipv6_prefix``: an IPv4 address, an IPv6 /64), so one
        host cannot take every slot by cycling through the addresses of its /64."""
        return source_network(client_ip, self.config.lockout)

    def _over_capacity(self, source: str) -> bool:
        limits = self.config.limits
        return (
            len(self._sessions) >= limits.max_sessions
            or self._per_ip[source] >= limits.max_sessions_per_ip
        )

    @property
    def session_count(self) -> int:
        return len(self._sessions)

    async def _serve(self, channel: Channel, settings: SessionSettings) -> None:
        listener = settings.listener.name
        accepted_at = asyncio.get_running_loop().time()  # limits.login_timeout runs from here
        session_id = self.observer.new_session_id()
        client = await self._client_address(channel, settings.listener, channel.peername())
        if client is None:
            self._refused(channel, listener, session_id, "proxy_protocol", None)
            return
        client_ip, client_port = client
        ip = str(client_ip)
        decision = connect_decision(settings.listener, client_ip)
        if not decision.allowed:
            # Closed without a word: a scanner learns nothing about what is behind us.
            self.observer.metrics.policy_denials.labels("connect").inc()
            self._refused(channel, listener, session_id, "denied", ip, decision.reason)
            return
        source = self._source(client_ip)
        if self._over_capacity(source):
            # Refused before TLS: cheap for us, and RFC 3206 SYS/TEMP tells clients to retry.
            # Not on the implicit-TLS port: there a client's TLS stack would read plaintext as
            # a broken record, and a handshake only to say no costs the CPU an overloaded
            # proxy lacks.  It gets a plain close (FIN), which clients retry like an outage.
            if settings.listener.mode != "tls":
                channel.write(replies.err("too many connections, try again later",
                                          Code.SYS_TEMP))
            self._refused(channel, listener, session_id, "over_capacity", ip)
            return
        self.observer.metrics.connections.labels(listener, "accepted").inc()
        self.observer.audit.event("connect", session_id, listener=listener, client=ip,
                                  port=client_port, result="accepted")
        await self._run_session(channel, settings, client_ip, session_id, client_port, source,
                                accepted_at)

    def _refused(self, channel: Channel, listener: str, session_id: str, result: str,
                 ip: str | None, reason: str = "") -> None:
        self.observer.metrics.connections.labels(listener, result).inc()
        self.observer.audit.event("connect", session_id, listener=listener, client=ip,
                                  result=result, reason=reason)
        log.info("connection from %s refused on %s: %s", ip, listener, reason or result)

        if result == "over_capacity":
            channel.close()
        else:
            channel.abort()

    async def _run_session(self, channel: Channel, settings: SessionSettings,
                           client_ip: IPAddress, session_id: str, client_port: int,
                           source: str, accepted_at: float) -> None:
        ip, listener = str(client_ip), settings.listener.name
        task = asyncio.current_task()
        assert task is not None
        self._sessions.add(task)
        self._channels[task] = channel
        self._per_ip[source] += 1
        metrics = self.observer.metrics
        metrics.active_sessions.labels(listener).inc()
        started = time.monotonic()
        try:
            session = Session(channel, settings, client_ip, f"{ip}:{client_port}", accepted_at)
            session.id = session_id
            await session.run()
        finally:
            metrics.active_sessions.labels(listener).dec()
            metrics.session_duration.labels(listener).observe(time.monotonic() - started)
            self._sessions.discard(task)
            self._channels.pop(task, None)
            self._per_ip[source] -= 1
            if self._per_ip[source] <= 0:
                del self._per_ip[source]

    async def _client_address(
        self, channel: Channel, listener: Listener, peer: Any
    ) -> tuple[IPAddress, int] | None:
        """The real client: the socket peer, or the PROXY header's source (HAProxy spec)."""
        socket_ip = parse_address(str(peer[0])) if peer else None
        if socket_ip is None:
            return None
        pp = listener.proxy_protocol
        if pp is None:
            return socket_ip, int(peer[1])
        if not in_networks(socket_ip, pp.trusted):
            log.warning("PROXY header from untrusted peer %s on %s: closed", socket_ip,
                        listener.name)
            self.observer.metrics.proxy_protocol_rejects.labels("untrusted_peer").inc()
            return None
        assert channel.proxy_header is not None
        try:
            async with asyncio.timeout(pp.header_timeout):
                header = await channel.proxy_header
        except (ProxyProtocolError, ConnectionError, TimeoutError) as exc:
            reason = "timeout" if isinstance(exc, TimeoutError) else (
                "malformed" if isinstance(exc, ProxyProtocolError) else "closed")
            log.warning("bad or missing PROXY header from %s on %s: %s", socket_ip,
                        listener.name, exc.__class__.__name__)
            self.observer.metrics.proxy_protocol_rejects.labels(reason).inc()
            return None
        if header.command == "PROXY" and header.source is not None:
            source_ip = parse_address(str(header.source[0]))
            return (source_ip, header.source[1]) if source_ip else None
        return socket_ip, int(peer[1])  # LOCAL: a health check from the balancer itself

    def reload_tls(self) -> bool:
        """New certificates for new handshakes; live sessions are untouched."""
        if self.server_tls is None:
            return True
        ok = self.server_tls.reload()
        self.observer.metrics.config_reloads.labels("ok" if ok else "refused").inc()
        error = "" if ok else f"certificates: {self.server_tls.error}"
        self.observer.audit.event("tls_reload", None, result="ok" if ok else "refused",
                                  **({"error": error} if error else {}))
        if not ok:
            self._refuse(error, counted=True)
        return ok

    def _refuse(self, reason: str, counted: bool = False) -> bool:
        """A reload refused: counted, logged, audited as ``config_reload`` with its reason."""
        self.refusal = reason
        if not counted:  # certificates: counted and logged by reload_tls and ServerTls
            self.observer.metrics.config_reloads.labels("refused").inc()
            log.error("policy reload refused: %s; keeping the old policy", reason)
        self.observer.audit.event("config_reload", None, result="refused", error=reason)
        return False

    def reload_policy(self, new: Policy) -> bool:
        """Swap in a validated policy for new sessions; listener sockets cannot change live."""
        old_sockets = [(lst.name, lst.host, lst.port, lst.mode) for lst in self.config.listeners]
        new_sockets = [(lst.name, lst.host, lst.port, lst.mode) for lst in new.listeners]
        if old_sockets != new_sockets:
            return self._refuse("listener names, addresses or modes changed (restart "
                                "popproxy for that)")
        try:
            upstream_tls = _upstream_contexts(new)
            server_tls = ServerTls(new.tls, new.state_dir) if self.server_tls else None
            # A new lockout key file that cannot be made is refused here (LockoutSecretError
            # is an OSError), not half-applied.
            guard = self._make_guard(new) if new.lockout != self.config.lockout else (
                self.lockout)
            scan = self.scan
            if new.scan != self.config.scan:  # (a bad Redis URL raises ValueError here)
                scan = ScanService(new.scan, new.state_dir, self.observer) if (
                    new.scan.enabled) else None
        except (TlsConfigError, OSError, ValueError, ssl.SSLError) as exc:
            return self._refuse(str(exc))
        if guard is not self.lockout:
            old, self.lockout = self.lockout, guard  # counters restart
            if old is not None:
                spawn(old.close(), "close-old-lockout-store")
        if scan is not self.scan:
            old_scan, self.scan = self.scan, scan
            if old_scan is not None:
                spawn(self._close_after_sessions(old_scan, set(self._sessions)),
                      "close-old-scan-service")
        self.config, self.upstream_tls, self.server_tls = new, upstream_tls, server_tls
        self.observer.metrics.config_reloads.labels("ok").inc()
        self.observer.audit.event("config_reload", None, result="ok")
        log.info("policy reloaded")
        return True

    @staticmethod
    async def _close_after_sessions(service: ScanService, sessions: set[asyncio.Task[Any]]) -> None:
        """Close a replaced scan service (threads, Redis pool) once the sessions that started
        under it, and may still use it, have ended.  ``asyncio.wait`` never cancels them."""
        if sessions:
            await asyncio.wait(sessions)
        await service.aclose()

    def _shutdown_notice(self, task: asyncio.Task[Any]) -> None:
        """The notice, where it cannot land inside a reply: only to a session that waits for
        its client's next line.  One mid-reply (a RETR being relayed) or mid-handshake is just
        closed: its client sees the reply cut short, which it treats as an error anyway."""
        channel = self._channels.get(task)
        if channel is not None and channel.awaiting_read and not channel.handshaking:
            channel.write(SHUTDOWN_NOTICE)

    async def stop(self, grace: float | None = None) -> None:
        """Stop accepting, let sessions finish for ``grace`` seconds, then cut the rest.

        Cut sessions close their upstream without QUIT, so nothing is committed; those waiting
        for their client's next command are told ``-ERR [SYS/TEMP] server shutting down``
        first.
        """
        if self._gauge_task is not None:
            self._gauge_task.cancel()
        for server in self._servers:
            server.close()
        grace = self.config.limits.shutdown_grace if grace is None else grace
        pending = set(self._sessions)
        if pending:
            log.info("waiting up to %.0fs for %d sessions", grace, len(pending))
            _, still = await asyncio.wait(pending, timeout=grace)
            for task in still:
                self._shutdown_notice(task)
                task.cancel()
            if still:
                await asyncio.wait(still, timeout=5)
        if self.lockout is not None:
            await self.lockout.close()
        if self.scan is not None:
            await self.scan.aclose()


