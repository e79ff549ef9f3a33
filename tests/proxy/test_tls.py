"""Client-facing and upstream TLS contexts, and the self-signed certificate of a first run.

SNI selection, reload and version refusal over real connections are in tests/tls/.
"""

from __future__ import annotations

import ipaddress
import logging
import re
import ssl
import warnings
from pathlib import Path

import pytest
import trustme
from cryptography import x509
from cryptography.utils import CryptographyDeprecationWarning

from popproxy.policy import Upstream
from popproxy.proxy.tls import (
    TLS13_SESSION_TICKETS,
    CertPair,
    TlsConfigError,
    build_server_context,
    certificate_expiry,
    fingerprint,
    generate_self_signed,
    upstream_context,
)


def test_self_signed_certificate_generated_once(tmp_path: Path) -> None:
    pair = generate_self_signed(tmp_path / "state")
    cert = x509.load_pem_x509_certificate(pair.cert.read_bytes())
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == ["localhost"]
    assert set(sans.get_values_for_type(x509.IPAddress)) == {
        ipaddress.ip_address("127.0.0.1"),
        ipaddress.ip_address("::1"),
    }
    assert pair.key.stat().st_mode & 0o077 == 0  # the key is private to its owner
    again = generate_self_signed(tmp_path / "state")
    assert again.cert.read_bytes() == pair.cert.read_bytes()  # reused, not regenerated
    assert re.fullmatch(r"([0-9A-F]{2}:){31}[0-9A-F]{2}", fingerprint(pair.cert))


@pytest.mark.parametrize(("version", "minimum"), [("TLSv1.2", ssl.TLSVersion.TLSv1_2),
                                                  ("TLSv1.3", ssl.TLSVersion.TLSv1_3)])
def test_server_context_hardening(tmp_path: Path, version: str,
                                  minimum: ssl.TLSVersion) -> None:
    ctx = build_server_context((generate_self_signed(tmp_path),), version)
    assert ctx.minimum_version == minimum
    assert ctx.options & ssl.OP_NO_COMPRESSION and ctx.options & ssl.OP_NO_RENEGOTIATION
    assert ctx.num_tickets == TLS13_SESSION_TICKETS
    assert ctx.sni_callback is not None


def test_a_missing_key_names_both_files(tmp_path: Path) -> None:
    pair = generate_self_signed(tmp_path)
    broken = CertPair(pair.cert, tmp_path / "missing.key", ("mail.example",))
    with pytest.raises(TlsConfigError, match=r"selfsigned\.crt / .*missing\.key"):
        build_server_context((broken,), "TLSv1.2")


def test_a_refused_load_says_which_file_and_why(tmp_path: Path) -> None:
    """OpenSSL says "[SSL] PEM lib" for a broken certificate and a broken key alike."""
    ca = trustme.CA()
    cert, key, other = tmp_path / "c.pem", tmp_path / "k.pem", tmp_path / "o.pem"
    issued = ca.issue_cert("mail.example")
    issued.cert_chain_pems[0].write_to_path(str(cert))
    ca.issue_cert("other.example").private_key_pem.write_to_path(str(other))
    key.write_text("not a key\n")
    with pytest.raises(TlsConfigError, match=r"k\.pem holds no unencrypted PEM private key$"):
        build_server_context((CertPair(cert, key, ()),), "TLSv1.2")
    with pytest.raises(TlsConfigError, match=r"o\.pem is not the private key of .*c\.pem$"):
        build_server_context((CertPair(cert, other, ()),), "TLSv1.2")
    issued.private_key_pem.write_to_path(str(key))
    cert.write_text("not a certificate\n")
    with pytest.raises(TlsConfigError, match=r"c\.pem holds no PEM certificate$"):
        build_server_context((CertPair(cert, key, ()),), "TLSv1.2")


def test_cryptographys_warnings_become_log_lines(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    """A certificate cryptography accepts with a CryptographyDeprecationWarning: the admin's
    log names the file; no raw Python warning (file:line: ...Warning) reaches stderr."""
    pem = tmp_path / "c.pem"
    trustme.CA().issue_cert("mail.example").cert_chain_pems[0].write_to_path(str(pem))
    real = x509.load_pem_x509_certificate

    def warning_load(data: bytes) -> x509.Certificate:
        warnings.warn("parsed an odd encoding", CryptographyDeprecationWarning, stacklevel=2)
        return real(data)

    monkeypatch.setattr(x509, "load_pem_x509_certificate", warning_load)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a warning that escaped would raise here
        with caplog.at_level(logging.WARNING, logger="popproxy.tls"):
            assert certificate_expiry(pem) == real(pem.read_bytes()).not_valid_after_utc.timestamp()
    assert f"certificate {pem}: parsed an odd encoding" in caplog.text
    assert certificate_expiry(tmp_path / "gone.pem") is None  # logged, no series


def test_upstream_context_verifies_unless_told_not_to() -> None:
    strict = upstream_context(Upstream(host="mail.example", mode="tls"))
    assert strict.verify_mode == ssl.CERT_REQUIRED and strict.check_hostname
    assert strict.minimum_version == ssl.TLSVersion.TLSv1_2
    lax = upstream_context(Upstream(host="mail.example", mode="tls", verify=False,
                                    tls_min_version="TLSv1.3"))
    assert lax.verify_mode == ssl.CERT_NONE and not lax.check_hostname
    assert lax.minimum_version == ssl.TLSVersion.TLSv1_3
