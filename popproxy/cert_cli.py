"""``popproxy cert --config PATH``: the certificates clients will see, and how to pin them.

For each certificate of the policy (the self-signed one in ``state_dir`` when none is listed:
made now if missing, exactly as ``popproxy run`` would), the names it covers, its expiry and its
fingerprints, with the line to paste into each client's configuration (docs/clients.md).
fetchmail pins by MD5 only and ignores IP-address SANs, so its line needs ``sslfingerprint``
with ``no sslcertck`` for a self-signed certificate reached by address.
"""

from __future__ import annotations

import argparse
import base64
import datetime
import hashlib
import sys
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from popproxy.policy import ConfigError, Policy, load_config
from popproxy.proxy.tls import fingerprint, generate_self_signed


@dataclass(frozen=True)
class CertificateFacts:
    path: Path
    subject: str
    names: tuple[str, ...]
    not_after: datetime.datetime
    sha256: str
    md5: str
    public_key_pin: str  # curl --pinnedpubkey: sha256// + base64 of the SubjectPublicKeyInfo

    def days_left(self, now: datetime.datetime) -> int:
        return (self.not_after - now).days


def certificate_facts(path: Path) -> CertificateFacts:
    cert = x509.load_pem_x509_certificate(path.read_bytes())
    try:
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names = tuple(str(name.value) for name in sans)
    except x509.ExtensionNotFound:
        names = ()
    spki = cert.public_key().public_bytes(serialization.Encoding.DER,
                                          serialization.PublicFormat.SubjectPublicKeyInfo)
    pin = "sha256//" + base64.b64encode(hashlib.sha256(spki).digest()).decode()
    return CertificateFacts(path, cert.subject.rfc4514_string(), names, cert.not_valid_after_utc,
                            fingerprint(path), fingerprint(path, "md5"), pin)


def policy_certificates(policy: Policy) -> list[Path]:
    if not policy.tls.certificates:
        return [generate_self_signed(policy.state_dir).cert]
    return [pair.cert for pair in policy.tls.certificates]


def describe(facts: CertificateFacts, now: datetime.datetime) -> str:
    return "\n".join([
        f"certificate {facts.path}",
        f"  subject     {facts.subject}",
        f"  names       {', '.join(facts.names) or '(none)'}",
        f"  expires     {facts.not_after:%Y-%m-%d %H:%M} UTC "
        f"({facts.days_left(now)} days left)",
        f"  SHA-256     {facts.sha256}",
        f"  MD5         {facts.md5}",
        f"  mpop        tls_fingerprint {facts.sha256}",
        f'  fetchmail   sslfingerprint "{facts.md5}"',
        f"  curl        --pinnedpubkey {facts.public_key_pin}",
    ])


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="popproxy cert", description="Print the certificates clients will see, their "
        "expiry and fingerprints, with client configuration lines (docs/clients.md).")
    parser.add_argument("--config", "-c", type=Path, required=True, help="the policy")
    return parser


def main_cert(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    try:
        policy = load_config(args.config)
        paths = policy_certificates(policy)
        reports = [certificate_facts(path) for path in paths]
    except ConfigError as exc:
        print(f"popproxy: {exc}", file=sys.stderr)
        return 2
    except (OSError, ValueError) as exc:
        print(f"popproxy cert: {exc}", file=sys.stderr)
        return 1
    now = datetime.datetime.now(datetime.UTC)
    print("\n\n".join(describe(report, now) for report in reports))
    return 0
