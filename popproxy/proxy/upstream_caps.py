"""What each upstream server supports, learned from its CAPA answer and remembered a while.

Only PIPELINING is used: with it the proxy sends USER and PASS in one write (RFC 2449
section 6.6 allows a client to pipeline only when the server lists PIPELINING), which saves a
round trip and a send/receive pair per login.  A server without CAPA (RFC 1939 only) answers
-ERR and gets USER and PASS one at a time, as before.
"""

from __future__ import annotations

import logging
import ssl
import time
from collections.abc import Callable, Iterable

from popproxy.policy import Upstream as UpstreamSettings
from popproxy.pop3.capa import Capability
from popproxy.pop3.events import Command, StatusLine
from popproxy.pop3.sasl import Credentials
from popproxy.proxy.upstream import Connector, UpstreamConnection, UpstreamError

log = logging.getLogger("popproxy.auth")

# Re-learn after this long: an upstream may be replaced or reconfigured behind one address.
CAPA_TTL = 600.0  # seconds

UpstreamAddress = tuple[str, int, str]  # host, port, mode


class UpstreamCapabilities:
    """Per-process memory of which upstream addresses accept pipelined commands."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._pipelining: dict[UpstreamAddress, tuple[bool, float]] = {}

    def pipelining(self, address: UpstreamAddress) -> bool | None:
        """True/False if known and fresh, None if the upstream must be asked (CAPA)."""
        known = self._pipelining.get(address)
        if known is None or self._clock() - known[1] > CAPA_TTL:
            return None
        return known[0]

    def learn(self, address: UpstreamAddress, caps: Iterable[Capability]) -> bool:
        supported = any(cap.name == "PIPELINING" for cap in caps)
        self._pipelining[address] = (supported, self._clock())
        return supported


async def user_pass(
    upstream: UpstreamConnection, target: UpstreamSettings, creds: Credentials,
    caps: UpstreamCapabilities, tls: ssl.SSLContext | None, connect: Connector,
) -> tuple[UpstreamConnection, StatusLine]:
    """USER then PASS where the upstream is not known to list PIPELINING: asks CAPA first if
    that is not known (RFC 2449 s5); returns the connection logged in over and PASS's status.
    (Where it is known, the caller sends ``pipelined_login`` itself: proxy/auth.py.)

    Pipelined, the password reaches the server even if it refused USER: the same server that
    would get it after a +OK, over the same connection.
    """
    address = (target.host, target.port, target.mode)
    pipelining = caps.pipelining(address)
    if pipelining is None:
        try:
            pipelining = caps.learn(address, await upstream.capabilities())
        except UpstreamError as exc:
            # No usable CAPA answer: remembered as "no pipelining", and the login goes on
            # over a fresh connection (this one's state is unknown).
            log.info("upstream %s:%d: CAPA failed (%s); USER and PASS one at a time",
                     target.host, target.port, exc)
            caps.learn(address, ())
            upstream.close()
            fresh = await UpstreamConnection.open(target, tls, connect)
            try:
                return fresh, await _send_login(fresh, creds, pipelining=False)
            except BaseException:  # the caller only knows the first connection
                fresh.close()
                raise
    upstream.pipelining = pipelining  # later commands may share a write too (mailbox.py)
    return upstream, await _send_login(upstream, creds, pipelining=pipelining)


async def _send_login(upstream: UpstreamConnection, creds: Credentials, *,
                      pipelining: bool) -> StatusLine:
    """The status of PASS (or of a refused USER, when not pipelined)."""
    if pipelining:
        return await upstream.pipelined_login(creds.username, creds.password)
    status = await upstream.status(Command("USER", (creds.username,)))
    if status.ok:
        status = await upstream.status(Command("PASS", (creds.password,)))
    return status
