"""Listeners, per-source and total session caps, TLS reload, graceful shutdown."""

from __future__ import annotations

import asyncio
import functools
import logging
import ssl
from collections import Counter
from typing import Any

from popproxy.policy.config import Config, Listener
from popproxy.pop3 import replies
from popproxy.pop3.replies import Code
from popproxy.proxy.channel import Channel
from popproxy.proxy.session import Session, SessionSettings
from popproxy.proxy.tasks import spawn
from popproxy.proxy.tls import ServerTls, upstream_context

log = logging.getLogger("popproxy.server")


class ProxyServer:
    """Owns the listening sockets, the TLS contexts and the set of live sessions."""

    def __init__(self, config: Config) -> None:
        self.config = config
        needs_tls = any(lst.mode != "plain" for lst in config.listeners)
        self.server_tls = ServerTls(config.tls, config.state_dir) if needs_tls else None
        self.upstream_tls: ssl.SSLContext | None = None
        if config.upstream.mode != "plain":
            self.upstream_tls = upstream_context(config.upstream)
            if not config.upstream.verify:
                log.warning(
                    "upstream certificate verification is OFF (verify: false): "
                    "anyone on the path can read users' passwords"
                )
        self._servers: list[asyncio.AbstractServer] = []
        self._sessions: set[asyncio.Task[Any]] = set()
        self._per_ip: Counter[str] = Counter()
        self.ports: dict[str, int] = {}  # listener name -> bound port (useful with port 0)

    def _settings(self, listener: Listener) -> SessionSettings:
        return SessionSettings(
            listener=listener,
            upstream=self.config.upstream,
            limits=self.config.limits,
            handshake_timeout=self.config.tls.handshake_timeout,
            server_tls=self.server_tls,
            upstream_tls=self.upstream_tls,
        )

    async def start(self, port_overrides: dict[str, int] | None = None) -> None:
        loop = asyncio.get_running_loop()
        for listener in self.config.listeners:
            port = (port_overrides or {}).get(listener.name, listener.port)
            settings = self._settings(listener)
            server = await loop.create_server(
                functools.partial(self._new_channel, settings),
                listener.host,
                port,
                reuse_address=True,
            )
            self._servers.append(server)
            self.ports[listener.name] = server.sockets[0].getsockname()[1]
            log.info(
                "listening: %s on %s:%d (%s)",
                listener.name,
                listener.host,
                self.ports[listener.name],
                listener.mode,
            )

    def _new_channel(self, settings: SessionSettings) -> Channel:
        implicit = settings.server_tls if settings.listener.mode == "tls" else None
        channel = Channel(implicit.context if implicit is not None else None)
        name = f"session-{settings.listener.name}"
        channel.connected.add_done_callback(lambda _: spawn(self._serve(channel, settings), name))

        return channel

    def _over_capacity(self, ip: str) -> bool:
        limits = self.config.limits
        return (
            len(self._sessions) >= limits.max_sessions
            or self._per_ip[ip] >= limits.max_sessions_per_ip
        )

    @property
    def session_count(self) -> int:
        return len(self._sessions)

    async def _serve(self, channel: Channel, settings: SessionSettings) -> None:
        peer = channel.peername()
        ip = str(peer[0]) if peer else "?"
        if self._over_capacity(ip):
            # Refused before TLS: cheap for us, and RFC 3206 SYS/TEMP tells clients to retry.
            channel.write(replies.err("too many connections, try again later", Code.SYS_TEMP))
            channel.close()
            return
        task = asyncio.current_task()
        assert task is not None
        self._sessions.add(task)
        self._per_ip[ip] += 1
        try:
            await Session(channel, settings, peer=f"{ip}:{peer[1] if peer else 0}").run()
        finally:
            self._sessions.discard(task)
            self._per_ip[ip] -= 1
            if self._per_ip[ip] <= 0:
                del self._per_ip[ip]

    def reload_tls(self) -> bool:
        """SIGHUP: new certificates for new handshakes; live sessions are untouched."""
        return self.server_tls.reload() if self.server_tls is not None else True

    async def stop(self, grace: float | None = None) -> None:
        """Stop accepting, let sessions finish for ``grace`` seconds, then cut the rest.

        Cut sessions close their upstream without QUIT, so nothing is committed.
        """
        for server in self._servers:
            server.close()
        grace = self.config.limits.shutdown_grace if grace is None else grace
        pending = set(self._sessions)
        if pending:
            log.info("waiting up to %.0fs for %d sessions", grace, len(pending))
            _, still = await asyncio.wait(pending, timeout=grace)
            for task in still:
                task.cancel()
            if still:
                await asyncio.wait(still, timeout=5)
