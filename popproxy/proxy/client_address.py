"""The real client of a connection: the socket peer, or the PROXY header's source.

A PROXY header (HAProxy's PROXY protocol v1/v2, popproxy/wire/proxyproto.py) is believed only
from a listener's trusted balancers; from anyone else it would let a client pick the address
every allowlist and lockout counter sees.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from prometheus_client import Counter

from popproxy.policy import Listener
from popproxy.policy.decisions import IPAddress, in_networks, parse_address
from popproxy.proxy.client_channel import ClientChannel
from popproxy.wire.proxyproto import ProxyProtocolError

log = logging.getLogger("popproxy.server")


async def client_address(channel: ClientChannel, listener: Listener, peer: Any,
                         rejects: Counter) -> tuple[IPAddress, int] | None:
    """(address, port), or None when the connection must be closed (``rejects`` counts why:
    popproxy_proxy_protocol_rejects_total{reason})."""
    socket_ip = parse_address(str(peer[0])) if peer else None
    if socket_ip is None:
        return None
    pp = listener.proxy_protocol
    if pp is None:
        return socket_ip, int(peer[1])
    if not in_networks(socket_ip, pp.trusted):
        log.warning("PROXY header from untrusted peer %s on %s: closed", socket_ip,
                    listener.name)
        rejects.labels("untrusted_peer").inc()
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
        rejects.labels(reason).inc()
        return None
    if header.command == "PROXY" and header.source is not None:
        source_ip = parse_address(str(header.source[0]))
        return (source_ip, header.source[1]) if source_ip else None
    return socket_ip, int(peer[1])  # LOCAL: a health check from the balancer itself
