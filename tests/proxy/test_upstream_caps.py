"""What the proxy remembers of an upstream's CAPA (PIPELINING, RFC 2449 s6.6), and for how long.

The session's use of it (USER and PASS in one write only where the upstream lists PIPELINING)
is tested on the session harness in test_session_logic.py; no sockets needed here.
"""

from __future__ import annotations

from popproxy.pop3.capa import Capability
from popproxy.proxy.upstream_caps import CAPA_TTL, UpstreamCapabilities


def test_capabilities_are_relearned_after_ttl() -> None:
    now = [1000.0]
    caps = UpstreamCapabilities(clock=lambda: now[0])
    address = ("127.0.0.1", 110, "plain")
    assert caps.pipelining(address) is None
    assert caps.learn(address, (Capability("TOP"), Capability("PIPELINING"))) is True
    assert caps.pipelining(address) is True
    assert caps.pipelining(("127.0.0.1", 111, "plain")) is None  # per address
    now[0] += CAPA_TTL + 1
    assert caps.pipelining(address) is None
    assert caps.learn(address, ()) is False  # e.g. an RFC 1939 server answering -ERR to CAPA
    assert caps.pipelining(address) is False
