"""TLS metrics: failed handshakes by reason (provoked by real clients), certificate expiry.

Each reason is provoked against a running proxy by a real TLS client (Python's ssl module, i.e.
OpenSSL, and the ``openssl s_client`` binary), then read back from
``popproxy_tls_handshake_failures_total{listener,reason}`` and the log line.
"""

from __future__ import annotations

import datetime
import socket
import ssl
import subprocess
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import trustme
from cryptography import x509

from popproxy.metrics import TLS_FAILURE_REASONS, Metrics
from popproxy.proxy.demo_upstream import DemoUpstream
from popproxy.proxy.observe import Observer
from popproxy.proxy.tls import CertPair, certificate_expiry
from popproxy.proxy.tls_metrics import (
    certificate_label,
    handshake_failure_detail,
    handshake_failure_reason,
    publish_certificates,
)
from tests.helpers import LoopThread, make_config, running_proxy
from tests.support.tools import require_tool
from tests.support.waiting import wait_for

HANDSHAKE_TIMEOUT = 1.0  # tls.handshake_timeout of the proxy under test: the timeout case


@dataclass
class Proxy:
    ports: dict[str, int]
    metrics: Metrics
    ca: trustme.CA

    def failures(self, listener: str, reason: str) -> float:
        value = self.metrics.registry.get_sample_value(
            "popproxy_tls_handshake_failures_total", {"listener": listener, "reason": reason})
        return 0.0 if value is None else value

    def trusting(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context()
        self.ca.configure_trust(ctx)
        return ctx


@pytest.fixture
def proxy(loop_thread: LoopThread, demo_upstream: DemoUpstream,
          tmp_path: Path) -> Iterator[Proxy]:
    ca = trustme.CA()
    pem = tmp_path / "server.pem"
    ca.issue_cert("localhost", "127.0.0.1").private_key_and_cert_chain_pem.write_to_path(
        str(pem))
    listeners = [{"name": "pop3s", "host": "127.0.0.1", "port": 1, "mode": "tls"},
                 {"name": "modern", "host": "127.0.0.1", "port": 2, "mode": "tls",
                  "tls_min_version": "TLSv1.3"}]
    config = make_config(demo_upstream.port, listeners=listeners, state_dir=str(tmp_path),
                         tls={"certificates": [{"cert": str(pem), "key": str(pem)}],
                              "handshake_timeout": HANDSHAKE_TIMEOUT})
    observer = Observer(Metrics())
    with running_proxy(config, loop_thread, observer) as running:
        yield Proxy(running.server.ports, observer.metrics, ca)


def _handshake(port: int, ctx: ssl.SSLContext) -> None:
    """A client handshake that the proxy refuses (the client sees it fail too)."""
    with (socket.create_connection(("127.0.0.1", port), timeout=10) as sock,
          pytest.raises((ssl.SSLError, ConnectionError))):
        ctx.wrap_socket(sock, server_hostname="localhost").close()


def _counted(proxy: Proxy, listener: str, reason: str, provoke: Callable[[], None],
             caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level("INFO", logger="popproxy.session"):
        provoke()
        # Both, waited for: the proxy's thread counts the failure, then logs it.
        logged = f"TLS handshake failed on {listener}: {reason}"
        wait_for(lambda: proxy.failures(listener, reason) == 1 and logged in caplog.text, 10,
                 f"{reason} counted and logged")
    assert proxy.failures(listener, reason) == 1
    others = [r for r in TLS_FAILURE_REASONS if r != reason and proxy.failures(listener, r)]
    assert not others, others


def test_protocol_version(proxy: Proxy, caplog: pytest.LogCaptureFixture) -> None:
    ctx = proxy.trusting()
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2  # the "modern" listener wants TLS 1.3

    _counted(proxy, "modern", "protocol_version",
             lambda: _handshake(proxy.ports["modern"], ctx), caplog)


def test_protocol_version_with_openssl_s_client(proxy: Proxy,
                                                caplog: pytest.LogCaptureFixture) -> None:
    openssl = require_tool("openssl", "apt-get install openssl")

    def provoke() -> None:
        done = subprocess.run([openssl, "s_client", "-connect",
                               f"127.0.0.1:{proxy.ports['modern']}", "-tls1_2"],
                              input="", capture_output=True, text=True, timeout=30)
        assert done.returncode != 0, done.stdout

    _counted(proxy, "modern", "protocol_version", provoke, caplog)


def test_no_shared_cipher(proxy: Proxy, caplog: pytest.LogCaptureFixture) -> None:
    ctx = proxy.trusting()
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_ciphers("AES128-SHA:AES256-SHA")  # RSA key exchange: not forward-secret, refused

    _counted(proxy, "pop3s", "no_shared_cipher",
             lambda: _handshake(proxy.ports["pop3s"], ctx), caplog)


def test_unknown_ca(proxy: Proxy, caplog: pytest.LogCaptureFixture) -> None:
    ctx = ssl.create_default_context()  # the system CAs: our test CA is not among them

    _counted(proxy, "pop3s", "unknown_ca",
             lambda: _handshake(proxy.ports["pop3s"], ctx), caplog)


def test_timeout(proxy: Proxy, caplog: pytest.LogCaptureFixture) -> None:
    def provoke() -> None:  # connects, then says nothing: the proxy gives up, not the client
        with socket.create_connection(("127.0.0.1", proxy.ports["pop3s"]), timeout=10) as sock:
            assert sock.recv(100) == b""

    _counted(proxy, "pop3s", "timeout", provoke, caplog)


def test_other(proxy: Proxy, caplog: pytest.LogCaptureFixture) -> None:
    def provoke() -> None:  # plaintext POP3 on the implicit-TLS port
        with socket.create_connection(("127.0.0.1", proxy.ports["pop3s"]), timeout=10) as sock:
            sock.sendall(b"USER plaintext\r\n" * 4)
            try:
                while sock.recv(100):
                    pass
            except ConnectionResetError:
                pass

    _counted(proxy, "pop3s", "other", provoke, caplog)


def test_reasons_map_from_openssl_reason_strings() -> None:
    def ssl_error(reason: str) -> ssl.SSLError:
        exc = ssl.SSLError(1, "handshake failed")
        exc.reason = reason  # what the ssl module fills in from OpenSSL's error queue
        return exc

    assert handshake_failure_reason(ssl_error("UNSUPPORTED_PROTOCOL")) == "protocol_version"
    assert handshake_failure_reason(ssl_error("NO_SHARED_CIPHER")) == "no_shared_cipher"
    assert handshake_failure_reason(ssl_error("TLSV1_ALERT_UNKNOWN_CA")) == "unknown_ca"
    assert handshake_failure_reason(ssl_error("SSLV3_ALERT_CERTIFICATE_UNKNOWN")) == "unknown_ca"
    assert handshake_failure_reason(ssl_error("HTTP_REQUEST")) == "other"
    assert handshake_failure_reason(TimeoutError()) == "timeout"
    assert handshake_failure_reason(ConnectionResetError(), timed_out=True) == "timeout"
    assert handshake_failure_reason(ConnectionResetError()) == "other"


def test_certificate_labels_come_from_the_policy(tmp_path: Path) -> None:
    live = tmp_path / "live"
    first = CertPair(live / "a.example" / "fullchain.pem", Path("k"), ())
    second = CertPair(live / "b.example" / "fullchain.pem", Path("k"), ())
    named = CertPair(tmp_path / "x.pem", Path("k"), ("mail.example", "pop.example"))
    taken: set[str] = set()
    labels = []
    for pair in (first, second, named):
        labels.append(certificate_label(pair, taken))
        taken.add(labels[-1])
    assert labels == ["fullchain", "b.example/fullchain", "mail.example"]


def test_publish_sets_expiry_and_forgets_replaced_certificates(tmp_path: Path) -> None:
    ca = trustme.CA()
    old, new = tmp_path / "old.pem", tmp_path / "new.pem"
    ca.issue_cert("a.example").cert_chain_pems[0].write_to_path(str(old))
    later = datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=40)
    ca.issue_cert("b.example", not_after=later).cert_chain_pems[0].write_to_path(str(new))
    metrics = Metrics()
    gauge = metrics.tls_certificate_expiry

    def value(name: str) -> float | None:
        return metrics.registry.get_sample_value(
            "popproxy_tls_certificate_expiry_timestamp_seconds", {"name": name})

    def loaded(*paths: Path) -> dict[CertPair, float | None]:  # as ServerTls.expiries
        return {CertPair(path, path, ()): certificate_expiry(path) for path in paths}

    publish_certificates(gauge, loaded(old))
    expected = x509.load_pem_x509_certificate(old.read_bytes()).not_valid_after_utc
    assert value("old") == expected.timestamp()
    publish_certificates(gauge, loaded(new, tmp_path / "gone.pem"))
    assert value("old") is None  # replaced on reload: no expiry alert for it
    assert value("new") == pytest.approx(later.timestamp(), abs=1)
    assert value("gone") is None  # unreadable: skipped with a warning, not a crash


def test_publishing_with_workers_prints_no_python_warning(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Regression: with workers (prometheus_client's multiprocess mode) every start printed
    "UserWarning: Clearing labels has not been implemented in multi-process mode yet" to
    stderr, on the README's first command; the clear is meant (NOT_SERVED, module docstring)."""
    cert = tmp_path / "a.pem"
    trustme.CA().issue_cert("a.example").cert_chain_pems[0].write_to_path(str(cert))
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any warning fails the test
        publish_certificates(Metrics().tls_certificate_expiry,
                             {CertPair(cert, cert, ()): certificate_expiry(cert)})


def test_a_plaintext_client_on_the_tls_port_is_one_log_line(
        proxy: Proxy, caplog: pytest.LogCaptureFixture) -> None:
    def provoke() -> None:
        with socket.create_connection(("127.0.0.1", proxy.ports["pop3s"]), timeout=10) as sock:
            sock.sendall(b"USER alice\r\n")
            sock.recv(100)  # the alert, or the close

    _counted(proxy, "pop3s", "other", provoke, caplog)
    time.sleep(0.2)  # (a second line would come in the same loop step, just after the first)
    said = [r.getMessage() for r in caplog.records if r.name == "popproxy.session"]
    assert said == [said[0]] and said[0].endswith(
        "TLS handshake failed on pop3s: other (wrong version number: not TLS; a plaintext "
        "client on a TLS port?)"), said


def _ssl_error(reason: str) -> ssl.SSLError:
    exc = ssl.SSLError(1, f"[SSL: {reason}]")
    exc.reason = reason  # what _ssl sets from OpenSSL's error queue
    return exc


def test_the_log_names_openssls_words_and_a_plaintext_client() -> None:
    """Regression (admin review): a plaintext client on the implicit-TLS port was logged as
    "TLS handshake failed on pop3s: other" and then "TLS failed: SSLError"."""
    assert handshake_failure_detail(_ssl_error("WRONG_VERSION_NUMBER")) == (
        " (wrong version number: not TLS; a plaintext client on a TLS port?)")
    assert handshake_failure_detail(_ssl_error("TLSV1_ALERT_UNKNOWN_CA")) == (
        " (tlsv1 alert unknown ca)")
    assert handshake_failure_detail(TimeoutError()) == ""
