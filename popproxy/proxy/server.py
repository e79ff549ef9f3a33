"""Listeners, per-source and total session caps, graceful shutdown."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

from popproxy.policy.config import Config, Listener
from popproxy.pop3 import replies
from popproxy.pop3.replies import Code
from popproxy.proxy.session import Session, SessionSettings

log = logging.getLogger("popproxy.server")

_Callback = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class ProxyServer:
    """Owns the listening sockets and the set of live sessions."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self._settings = SessionSettings(upstream=config.upstream, limits=config.limits)
        self._servers: list[asyncio.Server] = []
        self._sessions: set[asyncio.Task[Any]] = set()
        self._per_ip: Counter[str] = Counter()
        self.ports: dict[str, int] = {}  # listener name -> bound port (useful with port 0)

    async def start(self, port_overrides: dict[str, int] | None = None) -> None:
        for listener in self.config.listeners:
            port = (port_overrides or {}).get(listener.name, listener.port)
            server = await asyncio.start_server(
                self._handler(listener),
                listener.host,
                port,
                reuse_address=True,
            )
            self._servers.append(server)
            self.ports[listener.name] = server.sockets[0].getsockname()[1]
            log.info("listening: %s on %s:%d (%s)", listener.name, listener.host,
                     self.ports[listener.name], listener.mode)

    def _handler(self, listener: Listener) -> _Callback:
        async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await self._accept(reader, writer, listener)

        return accept

    def _over_capacity(self, ip: str) -> bool:
        limits = self.config.limits
        return (
            len(self._sessions) >= limits.max_sessions
            or self._per_ip[ip] >= limits.max_sessions_per_ip
        )

    @property
    def session_count(self) -> int:
        return len(self._sessions)

    async def _accept(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, listener: Listener
    ) -> None:
        peer = writer.get_extra_info("peername")
        ip = str(peer[0]) if peer else "?"
        if self._over_capacity(ip):
            writer.write(replies.err("too many connections, try again later", Code.SYS_TEMP))
            writer.close()
            return
        session = Session(reader, writer, self._settings, peer=f"{ip}:{peer[1] if peer else 0}")
        task = asyncio.current_task()
        assert task is not None
        self._sessions.add(task)
        self._per_ip[ip] += 1
        try:
            await session.run()
        finally:
            self._sessions.discard(task)
            self._per_ip[ip] -= 1
            if self._per_ip[ip] <= 0:
                del self._per_ip[ip]

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
