"""What each upstream server supports, learned from its CAPA answer and remembered a while.

Only PIPELINING is used: with it the proxy sends USER and PASS in one write (RFC 2449
section 6.6 allows a client to pipeline only when the server lists PIPELINING), which saves a
round trip and a send/receive pair per login.  A server without CAPA (RFC 1939 only) answers
-ERR and gets USER and PASS one at a time, as before.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

from popproxy.pop3.capa import Capability

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
