"""TLS contexts: client-facing (certificates chosen by SNI, hot reload) and upstream (verified).

Cipher policy: TLS 1.2 only with forward-secret AEAD suites (ECDHE with AES-GCM or ChaCha20,
as in Mozilla's "intermediate" profile); TLS 1.3 suites are OpenSSL's defaults, all AEAD.
Compression and renegotiation are off (CRIME, renegotiation DoS).
"""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
import logging
import os
import ssl
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from popproxy.policy import Policy, Tls, Upstream
from popproxy.policy.decisions import DEFAULT_UPSTREAM
from popproxy.policy.paths import shown
from popproxy.statefiles import open_private, private_dir

log = logging.getLogger("popproxy.tls")

TLS12_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20:!aNULL:!eNULL:!MD5:!DSS"
SELF_SIGNED_DAYS = 825  # the longest validity Apple clients accept for a server certificate
SELF_SIGNED_CERT = "selfsigned.crt"
SELF_SIGNED_KEY = "selfsigned.key"

_VERSIONS = {"TLSv1.2": ssl.TLSVersion.TLSv1_2, "TLSv1.3": ssl.TLSVersion.TLSv1_3}


class TlsConfigError(Exception):
    """A certificate or key could not be loaded."""


# TLS 1.3 session tickets per full handshake (RFC 8446 section 4.6.1).  A POP3 client polls
# with one connection at a time and each resumed session brings a new ticket, so one is enough
# to resume next time; OpenSSL's default of two costs another ticket's encryption per login.
TLS13_SESSION_TICKETS = 1


@dataclass(frozen=True)
class CertPair:
    cert: Path
    key: Path
    names: tuple[str, ...]


def _base_server_context(min_version: str) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = _VERSIONS[min_version]
    ctx.set_ciphers(TLS12_CIPHERS)
    ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION | ssl.OP_CIPHER_SERVER_PREFERENCE
    ctx.num_tickets = TLS13_SESSION_TICKETS
    return ctx


def build_server_context(pairs: tuple[CertPair, ...], min_version: str) -> ssl.SSLContext:
    """One context per certificate; the first is the default, the others are picked by SNI."""
    contexts: list[ssl.SSLContext] = []
    for pair in pairs:
        ctx = _base_server_context(min_version)
        try:
            ctx.load_cert_chain(pair.cert, pair.key)
        except (OSError, ssl.SSLError) as exc:
            raise TlsConfigError(f"cannot load {pair.cert} / {pair.key}: "
                                 f"{_load_failure(pair, exc)}") from None
        contexts.append(ctx)
    by_name = {
        name.lower(): ctx for pair, ctx in zip(pairs, contexts, strict=True) for name in pair.names
    }
    default = contexts[0]

    def choose(obj: ssl.SSLSocket | ssl.SSLObject, name: str | None, _: ssl.SSLContext) -> None:
        chosen = by_name.get((name or "").lower())
        if chosen is not None and chosen is not default:
            obj.context = chosen

    default.sni_callback = choose
    return default


def _load_failure(pair: CertPair, exc: OSError) -> str:
    """Which of the two files OpenSSL refused, and why: its "[SSL] PEM lib" names neither
    (a certificate file overwritten with garbage and an encrypted key read the same)."""
    if not isinstance(exc, ssl.SSLError):  # missing, unreadable: the OSError says which
        return str(exc)
    try:
        read_certificate(pair.cert)
    except (OSError, ValueError):
        return f"{pair.cert} holds no PEM certificate"
    if exc.reason == "KEY_VALUES_MISMATCH":
        return f"{pair.key} is not the private key of {pair.cert}"
    if exc.library == "SSL" and "PEM lib" in str(exc):  # the certificate read: the key did not
        return f"{pair.key} holds no unencrypted PEM private key"
    return str(exc.reason or exc)


def read_certificate(path: Path) -> x509.Certificate:
    """The file's first PEM certificate (OSError, ValueError if there is none).  What
    cryptography still accepts but warns about (CryptographyDeprecationWarning: an encoding a
    future release will refuse) becomes a log line naming the file, not a raw Python warning
    on stderr that names neither the file nor popproxy."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cert = x509.load_pem_x509_certificate(path.read_bytes())
    for warning in caught:
        log.warning("certificate %s: %s", path, warning.message)
    return cert


def certificate_expiry(path: Path) -> float | None:
    """notAfter of the file's first certificate, as a Unix timestamp; None (logged) if
    cryptography cannot read a certificate OpenSSL loaded: no expiry metric for it then."""
    try:
        return read_certificate(path).not_valid_after_utc.timestamp()
    except (OSError, ValueError) as exc:
        log.warning("certificate %s: served, but its expiry cannot be read (no expiry "
                    "metric for it): %s", path, exc)
        return None


def generate_self_signed(state_dir: Path) -> CertPair:
    """Create (once) a self-signed certificate for localhost, 127.0.0.1 and ::1."""
    cert_path, key_path = state_dir / SELF_SIGNED_CERT, state_dir / SELF_SIGNED_KEY
    if cert_path.exists() and key_path.exists() and _still_valid(cert_path):
        return CertPair(cert_path, key_path, ())
    private_dir(state_dir)
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "popproxy self-signed")])
    sans = [
        x509.DNSName("localhost"),
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        x509.IPAddress(ipaddress.ip_address("::1")),
    ]
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=SELF_SIGNED_DAYS))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_bytes = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    fd = open_private(key_path, os.O_WRONLY | os.O_TRUNC)
    with os.fdopen(fd, "wb") as fh:
        fh.write(key_bytes)
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return CertPair(cert_path, key_path, ())


def _still_valid(cert_path: Path) -> bool:
    cert = read_certificate(cert_path)
    return cert.not_valid_after_utc > datetime.datetime.now(datetime.UTC) + datetime.timedelta(
        days=1
    )


def fingerprint(cert_path: Path, algorithm: str = "sha256") -> str:
    """The fingerprint of a PEM certificate's first certificate, as colon-separated hex (like
    ``openssl x509 -fingerprint``).  ``md5`` only for fetchmail's ``sslfingerprint``, which
    accepts nothing else (docs/clients.md); it identifies, it protects nothing new."""
    der = read_certificate(cert_path).public_bytes(serialization.Encoding.DER)
    digest = hashlib.new(algorithm, der, usedforsecurity=algorithm != "md5").hexdigest().upper()
    return ":".join(digest[i : i + 2] for i in range(0, len(digest), 2))


def certificate_line(cert: Path) -> str:
    """The start-up line naming a served certificate (``policy.paths.shown``) and the
    fingerprints clients pin (MD5 too: fetchmail's ``sslfingerprint`` accepts nothing else,
    docs/clients.md)."""
    return (f"TLS certificate {shown(cert)} SHA-256 {fingerprint(cert)} "
            f"MD5 {fingerprint(cert, 'md5')}")


class ServerTls:
    """The current client-facing context; ``reload`` swaps it only if the new one loads."""

    def __init__(self, settings: Tls, state_dir: Path) -> None:
        self._settings = settings
        self._state_dir = state_dir
        self.pairs, self.contexts, self.expiries = self._load()
        self.error = ""  # why the last reload failed (audited and shown to systemd)

    def _load(self) -> tuple[tuple[CertPair, ...], dict[str, ssl.SSLContext],
                             Mapping[CertPair, float | None]]:
        """The pairs, their contexts and their expiries, swapped in together.  The expiry is
        read as the files load, so the expiry metric describes the certificates served, not
        the files on disk now (after a refused reload they hold what was refused)."""
        pairs = self._pairs()
        contexts = {version: build_server_context(pairs, version) for version in _VERSIONS}
        return pairs, contexts, {pair: certificate_expiry(pair.cert) for pair in pairs}

    @property
    def context(self) -> ssl.SSLContext:
        """The context for the configured default minimum TLS version."""
        return self.contexts[self._settings.min_version]

    def context_for(self, min_version: str | None) -> ssl.SSLContext:
        """The context for a listener's own minimum version (``None``: the default)."""
        return self.contexts[min_version or self._settings.min_version]

    def _pairs(self) -> tuple[CertPair, ...]:
        if not self._settings.certificates:
            return (generate_self_signed(self._state_dir),)
        return tuple(CertPair(c.cert, c.key, c.names) for c in self._settings.certificates)

    def reload(self) -> bool:
        """Re-read certificate files (SIGHUP).  Live sessions keep their TLS state."""
        try:
            loaded = self._load()
        except (TlsConfigError, OSError, ValueError) as exc:
            log.error("TLS reload failed, keeping the previous certificates: %s", exc)
            self.error = str(exc)
            return False
        self.pairs, self.contexts, self.expiries = loaded  # (the caller logs it: it knows why)
        return True


def upstream_context(settings: Upstream) -> ssl.SSLContext:
    """Verified client context for the upstream (system CAs unless ``ca_file`` is set)."""
    ctx = ssl.create_default_context(cafile=str(settings.ca_file) if settings.ca_file else None)
    ctx.minimum_version = _VERSIONS[settings.tls_min_version]
    if not settings.verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


def upstream_contexts(policy: Policy) -> dict[str, ssl.SSLContext | None]:
    """One verified client context per upstream that speaks TLS."""
    upstreams: dict[str, Upstream] = {DEFAULT_UPSTREAM: policy.upstream, **policy.upstreams}
    contexts: dict[str, ssl.SSLContext | None] = {}
    for name, upstream in upstreams.items():
        contexts[name] = None if upstream.mode == "plain" else upstream_context(upstream)
        if upstream.mode != "plain" and not upstream.verify:
            log.warning("upstream %s: certificate verification is OFF (verify: false): "
                        "anyone on the path can read users' passwords", name)
    return contexts
