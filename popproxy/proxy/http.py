"""The small HTTP endpoint for operators: /metrics, /healthz, /readyz (GET only).

Kept deliberately tiny (one request per connection, bounded request size): it is for
Prometheus and health checks on a management address, not for the public.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from popproxy.proxy.acceptor import listen_failure

log = logging.getLogger("popproxy.http")

MAX_REQUEST_HEAD = 8192  # bytes of request line + headers we read before giving up
REQUEST_TIMEOUT = 5.0  # seconds for a client to send its request head
# /readyz asks its check at most this often (the upstream probe, proxy/health.py, caches too)
READY_CACHE_SECONDS = 5.0

ReadyCheck = Callable[[], Awaitable[bool]]


class OpsServer:
    """Serves metrics from ``registry`` and health from ``ready``."""

    def __init__(self, registry: CollectorRegistry, ready: ReadyCheck) -> None:
        self._registry = registry
        self._ready = ready
        self._ready_at = 0.0
        self._ready_value = False
        self._server: asyncio.Server | None = None
        self.port = 0

    async def start(self, host: str, port: int) -> None:
        try:
            self._server = await asyncio.start_server(self._handle, host, port)
        except OSError as exc:
            raise listen_failure("observability.metrics_port", host, port, exc) from exc
        self.port = self._server.sockets[0].getsockname()[1]
        log.info("metrics and health on http://%s:%d/metrics", host, self.port)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()

    async def _is_ready(self) -> bool:
        now = time.monotonic()
        if now - self._ready_at > READY_CACHE_SECONDS:
            self._ready_value = await self._ready()
            self._ready_at = now
        return self._ready_value

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(REQUEST_TIMEOUT):
                head = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError,
                ConnectionError):
            writer.close()
            return
        if len(head) > MAX_REQUEST_HEAD:
            writer.close()
            return
        parts = head.split(b"\r\n", 1)[0].split(b" ")
        method, path = (parts[0], parts[1].split(b"?")[0]) if len(parts) >= 2 else (b"", b"")
        status, ctype, body = await self._route(method, path)
        writer.write(b"HTTP/1.1 " + status + b"\r\nContent-Type: " + ctype.encode()
                     + b"\r\nContent-Length: " + str(len(body)).encode()
                     + b"\r\nConnection: close\r\n\r\n" + body)
        with contextlib.suppress(ConnectionError):
            await writer.drain()
        writer.close()

    async def _route(self, method: bytes, path: bytes) -> tuple[bytes, str, bytes]:
        if method != b"GET":
            return b"405 Method Not Allowed", "text/plain", b"GET only\n"
        if path == b"/metrics":
            return b"200 OK", CONTENT_TYPE_LATEST, generate_latest(self._registry)
        if path == b"/healthz":
            return b"200 OK", "text/plain", b"ok\n"
        if path == b"/readyz":
            if await self._is_ready():
                return b"200 OK", "text/plain", b"ready\n"
            return b"503 Service Unavailable", "text/plain", b"upstream unreachable\n"
        return b"404 Not Found", "text/plain", b"not found\n"

