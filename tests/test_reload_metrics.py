"""Reloads are counted by kind and result, every refusal is audited, "unchanged" is said;
``popproxy run``'s /readyz and upstream gauge follow a reload.

``cli._reload_policy`` is what SIGHUP runs; here it runs in-process on a ProxyServer (not
listening: a reload swaps objects, it needs no socket), reading a real policy file.
"""

from __future__ import annotations

import io
import json
import logging
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import trustme
import yaml

from popproxy.auditlog import AuditLog
from popproxy.cli import _reload_policy
from popproxy.metrics import Metrics
from popproxy.policy import load_config
from popproxy.proxy.observe import Observer
from popproxy.proxy.server import ProxyServer
from tests.helpers import make_config
from tests.support.ports import accepts, free_port
from tests.support.waiting import wait_for


def _write(path: Path, **changes: Any) -> None:
    data = make_config(110).model_dump(mode="json", exclude_defaults=True)
    data.update(changes)
    path.write_text(yaml.safe_dump(data))


class Reloads:
    def __init__(self, tmp_path: Path, **changes: Any) -> None:
        self.path = tmp_path / "policy.yaml"
        _write(self.path, **changes)
        self.stream = io.StringIO()
        self.server = ProxyServer(load_config(self.path),
                                  Observer(Metrics(), AuditLog(self.stream)))

    def count(self, kind: str, result: str) -> float | None:
        return self.server.observer.metrics.registry.get_sample_value(
            "popproxy_config_reloads_total", {"kind": kind, "result": result})

    def events(self) -> list[tuple[str, str]]:
        lines = [json.loads(line) for line in self.stream.getvalue().splitlines()]
        return [(e["event"], e["result"]) for e in lines]


def test_unchanged_policy_is_logged_and_counted(tmp_path: Path,
                                                caplog: pytest.LogCaptureFixture) -> None:
    reloads = Reloads(tmp_path)
    with caplog.at_level(logging.INFO, logger="popproxy"):
        _reload_policy(reloads.server, reloads.path)
    assert "policy unchanged: nothing to reload" in caplog.text
    assert reloads.count("policy", "unchanged") == 1
    assert reloads.count("policy", "ok") == 0


def test_every_refusal_is_counted_and_audited(tmp_path: Path) -> None:
    reloads = Reloads(tmp_path)
    reloads.path.write_text("listeners: [{name: pop3, port: 99999}]\n")  # invalid: a bad port
    _reload_policy(reloads.server, reloads.path)
    # Valid but moves the listener: refused by the server, which used not to audit it.
    _write(reloads.path, listeners=[{"name": "moved", "port": 1, "mode": "plain",
                                     "allow_plaintext_login": True}])
    _reload_policy(reloads.server, reloads.path)
    _write(reloads.path, limits={"auth_failure_delay": 0, "max_sessions": 7})
    _reload_policy(reloads.server, reloads.path)
    assert reloads.count("policy", "refused") == 2
    assert reloads.count("policy", "ok") == 1
    assert reloads.events() == [("config_reload", "refused"), ("config_reload", "refused"),
                                ("config_reload", "ok")]


def test_certificate_reloads_have_their_kind_and_expiry(tmp_path: Path) -> None:
    ca = trustme.CA()
    pem = tmp_path / "mail.example.pem"
    issued = ca.issue_cert("mail.example")
    issued.private_key_and_cert_chain_pem.write_to_path(str(pem))
    listeners = [{"name": "pop3s", "host": "127.0.0.1", "port": 1, "mode": "tls"}]
    reloads = Reloads(tmp_path, listeners=listeners,
                      tls={"certificates": [{"cert": str(pem), "key": str(pem)}]})
    expiry = reloads.server.observer.metrics.registry.get_sample_value(
        "popproxy_tls_certificate_expiry_timestamp_seconds", {"name": "mail.example"})
    from cryptography import x509

    not_after = x509.load_pem_x509_certificate(issued.cert_chain_pems[0].bytes())
    assert expiry == not_after.not_valid_after_utc.timestamp()
    pem.write_text("not a certificate\n")
    assert reloads.server.reload_tls() is False
    ca.issue_cert("mail.example").private_key_and_cert_chain_pem.write_to_path(str(pem))
    assert reloads.server.reload_tls() is True
    assert reloads.count("certificates", "refused") == 1
    assert reloads.count("certificates", "ok") == 1
    assert reloads.events() == [("tls_reload", "refused"), ("tls_reload", "ok")]


def test_a_refused_certificate_reload_keeps_the_served_certificates_expiry(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Regression (admin test): garbage written into the certificate file, then SIGHUP: the
    reload is refused and the old certificate served, but its expiry series vanished (it was
    re-read from the garbage on disk), blanking the expiry alert and the dashboard panel."""
    ca = trustme.CA()
    pem = tmp_path / "mail.example.pem"
    ca.issue_cert("mail.example").private_key_and_cert_chain_pem.write_to_path(str(pem))
    listeners = [{"name": "pop3s", "host": "127.0.0.1", "port": 1, "mode": "tls"}]
    reloads = Reloads(tmp_path, listeners=listeners,
                      tls={"certificates": [{"cert": str(pem), "key": str(pem)}]})

    def expiry() -> float | None:
        return reloads.server.observer.metrics.registry.get_sample_value(
            "popproxy_tls_certificate_expiry_timestamp_seconds", {"name": "mail.example"})

    served = expiry()
    assert served is not None
    pem.write_text("not a certificate\n")
    with caplog.at_level(logging.INFO, logger="popproxy"):
        assert reloads.server.reload_tls() is False
    assert expiry() == served
    refusal = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert refusal == [f"TLS reload failed, keeping the previous certificates: cannot load "
                       f"{pem} / {pem}: {pem} holds no PEM certificate"]
    assert "cryptography.io" not in caplog.text  # nothing re-read the refused file
    assert reloads.count("certificates", "refused") == 1

def test_certificates_re_read_after_a_refused_policy_are_not_called_reloaded(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Regression (admin review): SIGHUP with a bad policy file logged the refusal and then
    "TLS certificates reloaded", read as the reload having worked; the old policy's
    certificate files were only re-read."""
    listeners = [{"name": "pop3s", "host": "127.0.0.1", "port": 1, "mode": "tls"}]
    reloads = Reloads(tmp_path, listeners=listeners)  # a self-signed certificate
    reloads.path.write_text("listeners: [oops\n")
    with caplog.at_level(logging.INFO, logger="popproxy"):
        assert _reload_policy(reloads.server, reloads.path) != ""
    said = [r.getMessage() for r in caplog.records]
    assert said[0].startswith("policy reload refused, keeping the old policy: ")
    assert said[1:] == ["TLS certificates re-read from the old policy's files (the new "
                        "policy was refused)"]
    assert reloads.count("certificates", "ok") == 1  # re-read they were: counted as before


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return int(response.status), response.read().decode()
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read().decode()


def test_popproxy_run_readyz_follows_a_reload(tmp_path: Path) -> None:
    """The probe of ``popproxy run`` reads the policy in force: an upstream added by SIGHUP is
    probed (down here: nobody listens), /readyz turns 503, the gauge names it."""
    port, metrics_port = free_port(), free_port()
    policy = tmp_path / "policy.yaml"
    base = (f"listeners: [{{name: pop3, host: 127.0.0.1, port: {port}, mode: plain, "
            "allow_plaintext_login: true}]\n"
            f"upstream: {{host: 127.0.0.1, port: {free_port(port)}}}\n"
            f"state_dir: {tmp_path / 'state'}\n"
            f"observability: {{metrics_host: 127.0.0.1, metrics_port: {metrics_port}}}\n"
            "limits: {shutdown_grace: 1}\n"
            "demo_upstream: {enabled: true}\n")
    policy.write_text(base)
    ops = f"http://127.0.0.1:{metrics_port}"
    with (tmp_path / "out.log").open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "popproxy", "run", "--config",
                                 str(policy)], cwd=tmp_path, stdin=subprocess.DEVNULL,
                                stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: accepts(metrics_port) and _get(ops + "/readyz")[0] == 200, 20,
                 "/readyz 200 with the demo upstream")
        dead = free_port(port)
        policy.write_text(base + f"upstreams: {{legacy: {{host: 127.0.0.1, port: {dead}, "
                                 "connect_timeout: 1}}\n"
                                 "routes: [{match: 'old*', upstream: legacy}]\n")
        os.kill(proc.pid, signal.SIGHUP)
        # At most PROBE_CACHE_SECONDS + READY_CACHE_SECONDS until /readyz sees the new upstream.
        wait_for(lambda: _get(ops + "/readyz")[0] == 503, 20, "/readyz 503 after the reload")
        metrics = _get(ops + "/metrics")[1]
        assert 'popproxy_upstream_up{upstream="legacy"} 0.0' in metrics
        assert 'popproxy_upstream_up{upstream="default"} 1.0' in metrics
        assert 'popproxy_config_reloads_total{kind="policy",result="ok"} 1.0' in metrics
        os.kill(proc.pid, signal.SIGHUP)  # the same files again
        wait_for(lambda: 'popproxy_config_reloads_total{kind="policy",result="unchanged"} 1.0'
                 in _get(ops + "/metrics")[1], 10, "the unchanged reload counted")
    finally:
        proc.terminate()
        proc.wait(15)
    assert "policy unchanged: nothing to reload" in (tmp_path / "out.log").read_text()
