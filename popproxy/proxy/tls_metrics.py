"""What the TLS metrics say: why a client handshake failed, when a served certificate expires.

The reason of a failed handshake is a word from ``metrics.TLS_FAILURE_REASONS``, mapped from
OpenSSL's reason string (``ssl.SSLError.reason``), so an admin can tell an old client
(``protocol_version``), a client with an odd cipher list (``no_shared_cipher``), a client that
does not trust our certificate (``unknown_ca``) and a stalled client (``timeout``) apart.

Certificate expiry with several workers: each worker writes its gauges to prometheus_client's
per-process file, and the supervisor's /metrics reads every series in every file.  Those files
cannot forget a series (``Gauge.clear()`` drops only the process's own handles), so a
certificate removed by a reload kept its expiry in /metrics, and its alert, until a restart.
A worker therefore overwrites a series it stops serving with ``NOT_SERVED`` before clearing
it; the gauge's ``livemin`` picks any worker's real expiry before that, and the supervisor's
collector (``without_unserved``) drops a series every worker marked so.
"""

from __future__ import annotations

import math
import ssl
import warnings
from collections.abc import Iterable, Iterator, Mapping

from prometheus_client import Gauge
from prometheus_client.metrics_core import Metric

from popproxy.proxy.tls import CertPair

EXPIRY_METRIC = "popproxy_tls_certificate_expiry_timestamp_seconds"
# "This worker serves no such certificate": no real notAfter, and above every one, so the
# workers' minimum is a real expiry wherever any worker still serves the certificate.
NOT_SERVED = math.inf

# OpenSSL reason strings (ssl.SSLError.reason) -> our reason label.  Seen on the server side:
# our own refusal (UNSUPPORTED_PROTOCOL, NO_SHARED_CIPHER) or the client's alert
# (TLSV1_ALERT_*, SSLV3_ALERT_*; RFC 8446 section 6.2).
_REASONS: dict[str, str] = {
    # The client offers only versions below our minimum (or above what we speak).
    "UNSUPPORTED_PROTOCOL": "protocol_version",
    "WRONG_SSL_VERSION": "protocol_version",
    "VERSION_TOO_LOW": "protocol_version",
    "VERSION_TOO_HIGH": "protocol_version",
    "NO_PROTOCOLS_AVAILABLE": "protocol_version",
    "TLSV1_ALERT_PROTOCOL_VERSION": "protocol_version",
    # No cipher suite (or key-exchange group) both sides accept.
    "NO_SHARED_CIPHER": "no_shared_cipher",
    "NO_CIPHERS_AVAILABLE": "no_shared_cipher",
    "NO_SHARED_GROUPS": "no_shared_cipher",
    "SSLV3_ALERT_HANDSHAKE_FAILURE": "no_shared_cipher",
    # The client refused our certificate.  OpenSSL clients send unknown_ca for an untrusted
    # issuer; Java, Go and others send bad_certificate or certificate_unknown for the same
    # thing (RFC 8446 section 6.2): the admin's next step is the same, check the chain.
    "TLSV1_ALERT_UNKNOWN_CA": "unknown_ca",
    "SSLV3_ALERT_BAD_CERTIFICATE": "unknown_ca",
    "SSLV3_ALERT_CERTIFICATE_UNKNOWN": "unknown_ca",
}


def handshake_failure_reason(exc: BaseException, timed_out: bool = False) -> str:
    """The ``reason`` label for a failed client handshake.

    Args:
        exc: what the handshake raised (``ssl.SSLError``, ``TimeoutError``, a closed channel).
        timed_out: the session's login deadline expired during the handshake.
    """
    if timed_out or isinstance(exc, TimeoutError):
        return "timeout"
    if isinstance(exc, ssl.SSLError):
        return _REASONS.get(str(exc.reason), "other")
    return "other"


def handshake_failure_detail(exc: BaseException) -> str:
    """What the log line adds to the reason label: OpenSSL's own words, and for bytes that are
    not TLS at all the likely cause (a plaintext POP3 client on the implicit-TLS port: RFC 8314
    section 3.3 wants TLS from the first byte there)."""
    reason = getattr(exc, "reason", None) if isinstance(exc, ssl.SSLError) else None
    if not reason:
        return ""
    words = str(reason).lower().replace("_", " ")
    if reason in ("WRONG_VERSION_NUMBER", "HTTP_REQUEST", "PACKET_LENGTH_TOO_LONG"):
        return f" ({words}: not TLS; a plaintext client on a TLS port?)"
    return f" ({words})"


def certificate_label(pair: CertPair, taken: set[str]) -> str:
    """The ``name`` label of a served certificate: its first configured SNI name, else the
    file's stem; ``parent/stem`` if that is taken (Let's Encrypt names every file
    ``fullchain.pem``).  From the policy, never from a client."""
    name = pair.names[0] if pair.names else pair.cert.stem
    if name in taken:
        name = f"{pair.cert.parent.name}/{pair.cert.stem}"
    return name


def publish_certificates(gauge: Gauge, expiries: Mapping[CertPair, float | None]) -> None:
    """Set popproxy_tls_certificate_expiry_timestamp_seconds for each served certificate;
    certificates no longer served lose their series (no alert for a file replaced on reload;
    with workers, by way of NOT_SERVED: see the module docstring).  Called at start and after
    every certificate or policy reload.

    ``expiries`` is ``ServerTls.expiries``: read when the certificates loaded, never from the
    files now, which a refused reload left holding what it refused (the series of the
    certificate still served vanished, and its alert with it).  None: unreadable, no series.
    """
    served: dict[str, float] = {}
    taken: set[str] = set()
    for pair, expiry in expiries.items():
        name = certificate_label(pair, taken)
        taken.add(name)
        if expiry is not None:
            served[name] = expiry
    for family in gauge.collect():
        for sample in family.samples:
            if sample.labels["name"] not in served:
                gauge.labels(sample.labels["name"]).set(NOT_SERVED)  # the file's last word
    with warnings.catch_warnings():
        # prometheus_client warns that clear() cannot forget a multiprocess file's series:
        # known, and why NOT_SERVED was written just now (module docstring).  The warning
        # reached stderr at every start with workers (the README's first command).
        warnings.filterwarnings("ignore", "Clearing labels", UserWarning)
        gauge.clear()
    for name, expiry in served.items():
        gauge.labels(name).set(expiry)


def without_unserved(families: Iterable[Metric]) -> Iterator[Metric]:
    """The supervisor's view of the workers' metrics without the expiry series no worker
    serves (NOT_SERVED in every worker's file)."""
    for family in families:
        if family.name == EXPIRY_METRIC:
            family.samples = [s for s in family.samples if s.value != NOT_SERVED]
        yield family
