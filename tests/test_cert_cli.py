"""``popproxy cert``: names, expiry and the fingerprints each client pins."""

from __future__ import annotations

import datetime
import hashlib
import ssl
from pathlib import Path

import pytest

from popproxy.cert_cli import certificate_facts, main_cert
from popproxy.proxy.tls import fingerprint, generate_self_signed


def test_facts_of_the_self_signed_certificate(tmp_path: Path) -> None:
    pair = generate_self_signed(tmp_path)
    facts = certificate_facts(pair.cert)
    der = ssl.PEM_cert_to_DER_cert(pair.cert.read_text())
    assert facts.md5.replace(":", "") == hashlib.md5(der).hexdigest().upper()
    assert facts.sha256 == fingerprint(pair.cert)
    assert facts.names == ("localhost", "127.0.0.1", "::1")
    assert facts.public_key_pin.startswith("sha256//") and len(facts.public_key_pin) == 52
    assert facts.days_left(datetime.datetime.now(datetime.UTC)) > 300


def test_main_prints_every_client_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    policy = tmp_path / "p.yaml"
    policy.write_text("listeners:\n  - {name: a, port: 1995, mode: tls}\nupstream: {port: 1100}\n"
                      f"state_dir: {tmp_path / 'state'}\n")
    assert main_cert(["--config", str(policy)]) == 0
    out = capsys.readouterr().out
    facts = certificate_facts(tmp_path / "state" / "selfsigned.crt")
    assert f"tls_fingerprint {facts.sha256}" in out
    assert f'sslfingerprint "{facts.md5}"' in out
    assert f"--pinnedpubkey {facts.public_key_pin}" in out


def test_bad_policy_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    policy = tmp_path / "p.yaml"
    policy.write_text("listeners: 3\n")
    assert main_cert(["--config", str(policy)]) == 2
    assert "p.yaml" in capsys.readouterr().err
