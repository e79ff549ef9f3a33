"""Listeners, connect-time policy, session caps, TLS and policy reload, graceful shutdown."""

from __future__ import annotations

import asyncio
import functools
import logging
import socket
import sqlite3
import ssl
import sys
import time
from collections import Counter
from typing import Any

from popproxy.capture.store import CaptureOptions
from popproxy.metrics import KNOWN_LABELS
from popproxy.policy import Listener, Policy
from popproxy.policy.decisions import IPAddress, connect_decision
from popproxy.policy.lockout import source_network
from popproxy.policy.restart import restart_needed
from popproxy.pop3 import replies
from popproxy.pop3.replies import Code
from popproxy.proxy.acceptor import Acceptor, listening_sockets
from popproxy.proxy.client_address import client_address
from popproxy.proxy.client_channel import ClientChannel
from popproxy.proxy.draining import close_after, drain, on_current_stores
from popproxy.proxy.failure_timing import FailureTiming
from popproxy.proxy.host_slots import SessionSlots
from popproxy.proxy.host_state import HostShare
from popproxy.proxy.lockout_guard import LockoutGuard
from popproxy.proxy.observe import Observer
from popproxy.proxy.scanning import ScanService
from popproxy.proxy.session import Session, SessionSettings
from popproxy.proxy.shutdown import SHUTDOWN_NOTICE
from popproxy.proxy.socket_channel import SocketChannel
from popproxy.proxy.tasks import spawn
from popproxy.proxy.tls import ServerTls, TlsConfigError, upstream_contexts
from popproxy.proxy.tls_metrics import publish_certificates
from popproxy.proxy.upstream_caps import UpstreamCapabilities

log = logging.getLogger("popproxy.server")

# popproxy_lockouts_active: recomputed per login and this often (s), to fall to 0 when quiet.
LOCKOUT_GAUGE_INTERVAL = 15.0


class ProxyServer:
    """Owns the listening sockets, the current policy and TLS contexts, and live sessions."""

    lockout_gauge_interval = LOCKOUT_GAUGE_INTERVAL  # tests set a shorter one before start()

    def __init__(self, config: Policy, observer: Observer | None = None,
                 capture: CaptureOptions | None = None, host: HostShare | None = None) -> None:
        """``host``: this process is one of several workers of the host, which share lockout
        counters, verdicts and session caps through ``host.db_path`` (host_state)."""
        self.config = config
        self.host = host
        self.slots = SessionSlots(host, config.limits.max_sessions) if host else None
        self.capture = capture  # popproxy run --capture DIR: every session recorded
        self.observer = observer if observer is not None else Observer()
        needs_tls = any(lst.mode != "plain" for lst in config.listeners)
        self.server_tls = ServerTls(config.tls, config.state_dir) if needs_tls else None
        self.upstream_tls = upstream_contexts(config)
        self.upstream_caps = UpstreamCapabilities()
        self.failure_timing = FailureTiming()  # kept across policy reloads, like upstream_caps
        self.lockout = self._make_guard(config)
        self.scan = self._make_scan(config)
        for listener in config.listeners:
            self.observer.metrics.prepare_listener(listener.name)
        for upstream in self.upstream_tls:
            self.observer.metrics.prepare_upstream(upstream)
        self._publish_certificates()
        self._acceptors: list[Acceptor] = []  # one per listening socket
        self._sessions: set[asyncio.Task[Any]] = set()
        self._connecting: dict[asyncio.Task[Any], ClientChannel] = {}  # draining.py
        self._stopping = False  # set by stop(): no session starts after it
        self._channels: dict[asyncio.Task[Any], ClientChannel] = {}  # each session's client side
        self._per_ip: Counter[str] = Counter()  # sessions per source network (see _source)
        self.ports: dict[str, int] = {}  # listener name -> bound port (useful with port 0)
        self._gauge_task: asyncio.Task[Any] | None = None
        # listener name -> its sessions' settings: built per policy/TLS reload, not per connection
        self._listener_settings: dict[str, SessionSettings] = {}
        self.refusal = ""  # why the last reload_policy/reload_tls was refused (for sd_notify)

    def _make_guard(self, config: Policy) -> LockoutGuard | None:
        if not config.lockout.enabled:
            return None
        return LockoutGuard.from_policy(config.lockout, config.state_dir, self.observer,
                                        self.host.db_path if self.host else None)

    def _make_scan(self, config: Policy) -> ScanService | None:
        if not config.scan.enabled:
            return None
        return ScanService(config.scan, config.state_dir, self.observer,
                           host_db=self.host.db_path if self.host else None,
                           cpu_share=self.host.workers if self.host else 1)

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

    async def start(self, port_overrides: dict[str, int] | None = None,
                    sockets: dict[str, socket.socket] | None = None) -> None:
        """Listen on every listener; ``sockets``: already bound and listening ones by listener
        name (a worker process gets them from the supervisor, docs/scaling.md)."""
        if self.slots is not None:
            self.slots.release_all()  # left by this worker's previous life, if it was killed
        backlog = self.config.limits.listen_backlog  # Acceptor listens again (inherited ones)
        loop = asyncio.get_running_loop()  # each connection's channel's and task's (a getpid())
        for listener in self.config.listeners:
            on_accept = functools.partial(self._accepted, listener.name, loop=loop)
            if sockets is not None:
                bound = [sockets[listener.name]]
            else:
                port = (port_overrides or {}).get(listener.name, listener.port)
                bound = listening_sockets(listener.host, port, backlog,
                                          f"listeners {listener.name}")
            self._acceptors.extend(Acceptor(sock, backlog, on_accept) for sock in bound)
            self.ports[listener.name] = bound[0].getsockname()[1]
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

    def _accepted(self, listener_name: str, sock: socket.socket,
                  loop: asyncio.AbstractEventLoop | None = None) -> None:
        """A new client socket (acceptor.py): its channel, and the session's task.
        The policy in force when the connection arrives is the one the session keeps."""
        settings = self._listener_settings.get(listener_name)
        if settings is None or settings.lockout is not self.lockout or (
                settings.scan is not self.scan):
            settings = self._settings(self._listener(listener_name))
            self._listener_settings[listener_name] = settings
        listener = settings.listener
        implicit = settings.server_tls if listener.mode == "tls" else None
        name = sys.intern(f"session-{listener_name}")  # one string per listener, not session
        try:
            channel = SocketChannel(sock, implicit, listener.proxy_protocol is not None, loop)
        except OSError:  # the loop could not watch it (closed under us): nothing to serve
            sock.close()
            return
        spawn(self._serve(channel, settings, loop), name, loop)

    def _source(self, client_ip: IPAddress) -> str:
        """What ``max_sessions_per_ip`` counts: a source network as the lockout counters see
        it (``lockout.ipv4_prefix``/``ipv6_prefix``: an IPv4 address, an IPv6 /64), so one
        host cannot take every slot by cycling through the addresses of its /64."""
        return source_network(client_ip, self.config.lockout)

    @property
    def session_count(self) -> int:
        return len(self._sessions)

    async def _serve(self, channel: ClientChannel, settings: SessionSettings,
                     loop: asyncio.AbstractEventLoop | None = None) -> None:
        listener = settings.listener.name
        loop = asyncio.get_running_loop() if loop is None else loop  # _accepted gives start's
        accepted_at = loop.time()  # limits.login_timeout runs from here
        task, session_id = asyncio.current_task(loop), self.observer.new_session_id()
        assert task is not None
        settings = on_current_stores(settings, self.lockout, self.scan)  # reloaded meanwhile?
        self._connecting[task] = channel  # stop() waits for it too, not only for sessions
        try:
            admitted = await self._admission(channel, settings, session_id)
        finally:
            del self._connecting[task]
        if admitted is None:
            return
        client_ip, ip, client_port, source, slot = admitted  # ip: str(client_ip), made once
        try:
            if self._shutting_down(channel, settings.listener, session_id, ip):
                return  # stop() began while we awaited: no session starts after it
            metrics = self.observer.metrics
            metrics.child(metrics.connections, listener, "accepted").inc()
            self.observer.audit.event("connect", session_id, listener=listener, client=ip,
                                      port=client_port, result="accepted")
            # No coroutine of its own around the session: ~0.3 KiB per idle session per frame.
            started = self._session_started(task, channel, listener, source)
            try:
                session = Session(channel, settings, client_ip, f"{ip}:{client_port}", accepted_at)
                session.id = session_id
                await session.run()
            finally:
                self._session_ended(task, listener, source, started)
        finally:
            if isinstance(slot, bytes) and self.slots is not None:  # the host table's
                self.slots.give_back(source, slot)

    async def _admission(self, channel: ClientChannel, settings: SessionSettings, session_id: str,
                         ) -> tuple[IPAddress, str, int, str, str | bytes] | None:
        """The PROXY header, the connect policy and the caps: (client address, as text, port,
        source, slot: ``_admit``'s), or None when the connection was refused (and closed) here."""
        listener = settings.listener.name
        client = await client_address(channel, settings.listener, channel.peername(),
                                      self.observer.metrics.proxy_protocol_rejects)
        if client is None:
            self._refused(channel, listener, session_id, "proxy_protocol", None)
            return None
        client_ip, client_port = client
        ip = str(client_ip)
        decision = connect_decision(settings.listener, client_ip)
        if not decision.allowed:
            # Closed without a word: a scanner learns nothing about what is behind us.
            self.observer.metrics.policy_denials.labels("connect").inc()
            self._refused(channel, listener, session_id, "denied", ip, decision.reason)
            return None
        if self._shutting_down(channel, settings.listener, session_id, ip):
            return None  # (nor a slot taken from a table stop() may have closed)
        source = self._source(client_ip)
        slot = await self._admit(source)
        if slot is None:
            # Refused before TLS: cheap for us, and RFC 3206 SYS/TEMP tells clients to retry.
            # Not on the implicit-TLS port: there a client's TLS stack would read plaintext as
            # a broken record, and a handshake only to say no costs the CPU an overloaded
            # proxy lacks.  It gets a plain close (FIN), which clients retry like an outage.
            if settings.listener.mode != "tls":
                channel.write(replies.err("too many connections, try again later",
                                          Code.SYS_TEMP))
            self._refused(channel, listener, session_id, "over_capacity", ip)
            return None
        return client_ip, ip, client_port, source, slot

    def _shutting_down(self, channel: ClientChannel, listener: Listener, session_id: str,
                       ip: str) -> bool:
        """After stop(): RFC 3206 SYS/TEMP where the greeting would come; port 995: a close."""
        if not self._stopping:
            return False
        if listener.mode != "tls":
            channel.write(SHUTDOWN_NOTICE)
        self._refused(channel, listener.name, session_id, "shutting_down", ip)
        return True

    async def _admit(self, source: str) -> str | bytes | None:
        """None when a session cap is reached; else the generation of the host's table the
        slot was taken in (to give it back in) or "local" (counted by this process alone)."""
        limits = self.config.limits
        if self.slots is not None:
            try:
                return await self.slots.take(source, limits.max_sessions,
                                             limits.max_sessions_per_ip)
            except OSError as exc:  # a broken table must not refuse every session
                log.warning("host session slots unavailable (%s): capping this worker alone",
                            exc.__class__.__name__)
        full = (len(self._sessions) >= limits.max_sessions
                or self._per_ip[source] >= limits.max_sessions_per_ip)
        return None if full else "local"

    def _refused(self, channel: ClientChannel, listener: str, session_id: str, result: str,
                 ip: str | None, reason: str = "") -> None:
        self.observer.metrics.connections.labels(listener, result).inc()
        self.observer.audit.event("connect", session_id, listener=listener, client=ip,
                                  result=result, reason=reason)
        log.info("connection from %s refused on %s: %s", ip, listener, reason or result)
        if result in ("over_capacity", "shutting_down"):  # a FIN after the -ERR, not a reset
            channel.close()
        else:
            channel.abort()

    def _session_started(self, task: asyncio.Task[Any], channel: ClientChannel, listener: str,
                         source: str) -> float:
        """Count the session that starts in ``task``; its start time."""
        self._sessions.add(task)
        self._channels[task] = channel
        self._per_ip[source] += 1
        metrics = self.observer.metrics
        metrics.child(metrics.active_sessions, listener).inc()
        return time.monotonic()

    def _session_ended(self, task: asyncio.Task[Any], listener: str, source: str,
                       started: float) -> None:
        metrics = self.observer.metrics
        metrics.child(metrics.active_sessions, listener).dec()
        metrics.child(metrics.session_duration, listener).observe(time.monotonic() - started)
        self._sessions.discard(task)
        self._channels.pop(task, None)
        self._per_ip[source] -= 1
        if self._per_ip[source] <= 0:
            del self._per_ip[source]

    def _publish_certificates(self) -> None:
        if self.server_tls is not None:
            publish_certificates(self.observer.metrics.tls_certificate_expiry,
                                 self.server_tls.expiries)

    def _reloaded(self, kind: str, result: str, **fields: object) -> None:
        """Count a reload (popproxy_config_reloads_total{kind,result}) and audit it: every
        refusal is in the audit log, whatever refused it."""
        self.observer.metrics.config_reloads.labels(kind, result).inc()
        event = "tls_reload" if kind == "certificates" else "config_reload"
        self.observer.audit.event(event, None, result=result, **fields)

    def reload_tls(self, policy_refused: bool = False) -> bool:
        """New certificates for new handshakes; live sessions are untouched.  After a refused
        policy the files are the old policy's: not "reloaded" (read as the reload worked)."""
        if self.server_tls is None:
            return True
        ok = self.server_tls.reload()
        self._listener_settings = {}
        error = "" if ok else f"certificates: {self.server_tls.error}"
        self._reloaded("certificates", "ok" if ok else "refused",
                       **({"error": error} if error else {}))
        self.refusal = error
        if ok:  # refused: the old certificates are served, and their expiries stay published
            self._publish_certificates()
            log.info("TLS certificates re-read from the old policy's files (the new policy "
                     "was refused)" if policy_refused else "TLS certificates reloaded")
        return ok

    def _needs_restart(self, new: Policy) -> str:
        """Why ``new`` cannot be swapped in live ("" if it can)."""
        if reason := restart_needed(self.config, new):  # sockets, state_dir
            return reason
        # The host's session table cannot grow while mapped: every worker refuses alike.
        return self.slots.refusal(new.limits.max_sessions) if self.slots is not None else ""

    def reload_policy(self, new: Policy) -> bool:
        """Swap in a validated policy for new sessions; listener sockets cannot change live."""
        if needs_restart := self._needs_restart(new):
            self.refusal = needs_restart
            self._reloaded("policy", "refused", error=self.refusal)
            log.error("policy reload refused: %s; keeping the old policy", self.refusal)
            return False
        guard = self.lockout
        try:
            upstream_tls = upstream_contexts(new)
            server_tls = ServerTls(new.tls, new.state_dir) if self.server_tls else None
            # A new lockout key file that cannot be made is refused here (LockoutSecretError
            # is an OSError), not half-applied.
            if new.lockout != self.config.lockout:
                guard = self._make_guard(new)
            scan = self.scan
            if new.scan != self.config.scan:  # (a bad Redis URL raises ValueError here)
                scan = self._make_scan(new)
        except (TlsConfigError, OSError, ValueError, ssl.SSLError, sqlite3.Error) as exc:
            if guard is not None and guard is not self.lockout:  # built, then refused
                spawn(guard.close(), "close-refused-lockout-store")
            self.refusal = str(exc)
            self._reloaded("policy", "refused", error=self.refusal)
            log.error("policy reload refused: %s; keeping the old policy", exc)
            return False
        if guard is not self.lockout:
            old, self.lockout = self.lockout, guard  # counters restart
            if old is not None:  # sessions (and those before theirs) still count with it
                spawn(close_after(old.close, self._sessions | set(self._connecting)),
                      "close-old-lockout-store")
        if scan is not self.scan:
            if scan is None:  # scanning turned off: no budget for the alert to compare with
                self.observer.metrics.scan_listing_budget.set(0)
            old_scan, self.scan = self.scan, scan
            if old_scan is not None:
                spawn(close_after(old_scan.aclose, self._sessions | set(self._connecting)),
                      "close-old-scan-service")
        self.config, self.upstream_tls, self.server_tls = new, upstream_tls, server_tls
        self._listener_settings = {}
        for acceptor in self._acceptors:  # (a worker: its own socket of each group)
            acceptor.resize(new.limits.listen_backlog)
        for upstream in upstream_tls:  # a new upstream's series exist at 0 from now on
            self.observer.metrics.prepare_upstream(upstream)
        self._publish_certificates()
        self._reloaded("policy", "ok")
        log.info("policy reloaded")
        return True

    async def stop(self, grace: float | None = None) -> None:
        """Stop accepting; sessions (and connections before theirs, which _serve turns away)
        get ``grace`` s, then are cut: their upstream closed without QUIT, nothing committed."""
        self._stopping = True
        if self._gauge_task is not None:
            self._gauge_task.cancel()
        for acceptor in self._acceptors:
            acceptor.close()
        self._acceptors = []
        grace = self.config.limits.shutdown_grace if grace is None else grace
        await drain(self._sessions, self._channels, self._connecting, grace)
        if self.lockout is not None:
            await self.lockout.close()
        if self.scan is not None:
            await self.scan.aclose()
        if self.slots is not None:
            self.slots.close()
