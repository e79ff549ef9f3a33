"""The upstream probe against a real Dovecot: plain, STLS and implicit TLS, certificate checked.

``/readyz`` and ``popproxy_upstream_up`` say "up" only when Dovecot greets with +OK over the
upstream's configured mode; a certificate that does not verify is "down" (the probe checks
what a session would check).  Dovecot never sees a login or a QUIT from the probe.
"""

from __future__ import annotations

import pytest

from popproxy.metrics import Metrics
from popproxy.policy import Policy
from popproxy.proxy.health import UpstreamProbe
from popproxy.proxy.server import ProxyServer
from tests.helpers import LoopThread, make_config
from tests.integration.conftest import DovecotPki
from tests.integration.dovecot import Dovecot
from tests.integration.rawpop import wait_for

pytestmark = pytest.mark.dovecot


def _policy(plain: Dovecot, tls: Dovecot, pki: DovecotPki) -> Policy:
    data = make_config(plain.port).model_dump(mode="json")
    verified = {"host": "127.0.0.1", "ca_file": str(pki.ca_file), "server_name": pki.server_name,
                "connect_timeout": 2, "greeting_timeout": 2}
    assert tls.tls_port is not None
    data["upstreams"] = {
        "stls": {**verified, "port": tls.port, "mode": "starttls"},
        "pop3s": {**verified, "port": tls.tls_port, "mode": "tls"},
        # The right server, a name its certificate does not carry: refused like a session.
        "wrong-name": {**verified, "port": tls.tls_port, "mode": "tls",
                       "server_name": "other.example"},
    }
    return Policy.model_validate(data)


def test_probe_greets_dovecot_in_every_mode(dovecot: Dovecot, dovecot_tls: Dovecot,
                                            dovecot_pki: DovecotPki,
                                            loop_thread: LoopThread) -> None:
    metrics = Metrics()
    server = ProxyServer(_policy(dovecot, dovecot_tls, dovecot_pki))
    probe = UpstreamProbe(server, metrics)
    log_start = dovecot_tls.log_size()

    results = loop_thread.call(probe.check())

    assert results == {"default": True, "stls": True, "pop3s": True, "wrong-name": False}
    assert loop_thread.call(probe.ready()) is False  # cached: the same four answers
    up = {name: metrics.registry.get_sample_value("popproxy_upstream_up", {"upstream": name})
          for name in results}
    assert up == {"default": 1.0, "stls": 1.0, "pop3s": 1.0, "wrong-name": 0.0}
    # Dovecot's own account of the three TLS probes: closed by us before any login.
    def disconnects() -> list[str]:
        return [line for line in dovecot_tls.log_text(log_start).splitlines()
                if "Disconnected" in line]

    wait_for(lambda: len(disconnects()) == 3, 10, "Dovecot to log the three probes")
    assert all("Connection closed" in line and "no auth attempts" in line
               for line in disconnects()), disconnects()
