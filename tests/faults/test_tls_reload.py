"""Certificate reload (SIGHUP) with a broken certificate file, seen from live and new sessions.

Defined outcome: the reload is refused, the previous certificate keeps serving new handshakes,
live TLS sessions are untouched, and a fixed file is picked up by the next reload.  The object
level is covered by tests/tls/test_tls_settings.py; this is the session-level variant.
"""

from __future__ import annotations

import poplib
import ssl
from pathlib import Path

import trustme

from popproxy.proxy.demo_upstream import DemoUpstream
from tests.faults.support import Observed
from tests.helpers import LoopThread, RunningProxy, make_config, running_proxy

BROKEN = "-----BEGIN CERTIFICATE-----\nbroken\n-----END CERTIFICATE-----\n"


def _issue(ca: trustme.CA, pem: Path) -> bytes:
    """A fresh server certificate (chain + key) in ``pem``; returns the leaf in DER."""
    cert = ca.issue_cert("127.0.0.1", "localhost")
    cert.private_key_and_cert_chain_pem.write_to_path(str(pem))
    return ssl.PEM_cert_to_DER_cert(cert.cert_chain_pems[0].bytes().decode())


def _client(proxy: RunningProxy, ca_file: Path) -> poplib.POP3_SSL:
    ctx = ssl.create_default_context(cafile=str(ca_file))
    return poplib.POP3_SSL("127.0.0.1", proxy.port, context=ctx, timeout=10)


def _peer_der(client: poplib.POP3_SSL) -> bytes:
    sock = client.sock
    assert isinstance(sock, ssl.SSLSocket)
    der = sock.getpeercert(binary_form=True)
    assert der is not None
    return der


async def _reload(proxy: RunningProxy) -> bool:
    return proxy.server.reload_tls()  # what SIGHUP runs (cli._reload), on the proxy's loop


def _run(loop: LoopThread, demo: DemoUpstream, tmp: Path, observed: Observed) -> None:
    ca = trustme.CA()
    ca_file, pem = tmp / "ca.pem", tmp / "server.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    first = _issue(ca, pem)
    config = make_config(demo.port, listeners=[{"name": "tls", "port": 1, "mode": "tls"}],
                         tls={"certificates": [{"cert": str(pem), "key": str(pem)}]},
                         state_dir=str(tmp / "state"))
    with running_proxy(config, loop, observed.observer) as proxy:
        live = _client(proxy, ca_file)
        live.user("demo")
        live.pass_("demo")

        pem.write_text(BROKEN)
        assert loop.call(_reload(proxy)) is False

        assert live.stat()[0] == 3  # the live session is untouched
        assert b"came through the proxy" in b"\n".join(live.retr(1)[1])
        new = _client(proxy, ca_file)  # new handshakes keep the previous certificate
        assert _peer_der(new) == first
        new.user("demo")
        new.pass_("demo")
        assert new.stat()[0] == 3
        assert new.quit().startswith(b"+OK")
        assert live.quit().startswith(b"+OK")

        second = _issue(ca, pem)  # fixed: the next reload takes it
        assert loop.call(_reload(proxy)) is True
        fixed = _client(proxy, ca_file)
        assert _peer_der(fixed) == second != first
        assert fixed.quit().startswith(b"+OK")


def test_broken_certificate_reload_keeps_serving(demo_upstream: DemoUpstream,
                                                 loop_thread: LoopThread, tmp_path: Path) -> None:
    observed = Observed.new()
    _run(loop_thread, demo_upstream, tmp_path, observed)
    assert observed.sample("popproxy_config_reloads_total", kind="certificates",
                           result="refused") == 1
    assert observed.sample("popproxy_config_reloads_total", kind="certificates",
                           result="ok") == 1
    assert [e["result"] for e in observed.events("tls_reload")] == ["refused", "ok"]
    # The refusal is audited with its reason (issue 19 item 2).
    refused = observed.events("tls_reload")[0]
    assert refused["error"].startswith("certificates: cannot load ")
    assert observed.sample("popproxy_tls_handshakes_total", kind="implicit",
                           version="TLSv1.3", result="ok") == 3
    assert [e["result"] for e in observed.events("login")] == ["ok", "ok"]
