"""A client's TLS handshake as its session waits for it: the outcome counted (by kind and TLS
version; a failure also by listener and reason), logged once and audited.

Split from ``session.py`` (house rule: small modules); the session passes what it knows.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Callable

from popproxy.proxy.channel_errors import ChannelClosed, wait_handshake
from popproxy.proxy.client_channel import ClientChannel
from popproxy.proxy.errors import SessionEnd
from popproxy.proxy.settings import SessionSettings
from popproxy.proxy.tls_metrics import handshake_failure_detail, handshake_failure_reason

# The session's logger: its handshake line is the session's, as before the split.
log = logging.getLogger("popproxy.session")


async def await_client_handshake(handshake: asyncio.Future[None], kind: str,
                                 settings: SessionSettings, client: ClientChannel, peer: str,
                                 audit: Callable[..., None],
                                 login_timer: asyncio.Timeout | None) -> None:
    """Wait for ``handshake`` (``kind``: "implicit" or "stls"), failing it after the
    listener's ``handshake_timeout``.  A TLS or connection failure ends the session
    (``SessionEnd``: logged here, one line per failed handshake); anything else (a timeout,
    the login deadline's cancellation) is counted, then raised as it came."""
    metrics = settings.observer.metrics
    try:
        await wait_handshake(handshake, settings.handshake_timeout)
    except BaseException as exc:
        login_late = login_timer is not None and login_timer.expired()
        result = "timeout" if isinstance(exc, TimeoutError) or login_late else "failed"
        reason, listener = handshake_failure_reason(exc, login_late), settings.listener
        metrics.tls_handshakes.labels(kind, "none", result).inc()
        metrics.tls_handshake_failures.labels(listener.name, reason).inc()
        log.info("session %s: TLS handshake failed on %s: %s%s", peer, listener.name,
                 reason, handshake_failure_detail(exc))
        audit("tls", mode=kind, result=result, reason=reason, error=type(exc).__name__)
        if isinstance(exc, (ssl.SSLError, ChannelClosed)):
            raise SessionEnd from None
        raise
    sslobj = client.ssl_object()
    version = (sslobj.version() if sslobj else None) or "unknown"
    metrics.child(metrics.tls_handshakes, kind, version, "ok").inc()
    audit("tls", mode=kind, result="ok", version=version)
