"""Start-up checks of every file a policy refers to (issue 19 item 2).

A policy can be valid YAML and still unusable: a certificate that expired, a key that belongs to
another certificate, a CA file that is not PEM, a feed that was never downloaded, an audit log
in a directory the service user cannot write.  Found at ``check-config`` (and before ``run``
binds anything, and before a reload is applied), each is one ``Finding`` naming the key, the
file and the fix, instead of a traceback at the first TLS handshake or the first login.

Errors make ``check-config`` exit 1 and ``run`` exit 2 (``RestartPreventExitStatus=2``:
restarting cannot fix a file); warnings (a certificate expiring within
``EXPIRY_WARNING_DAYS``) are printed and do not fail.  An ``insecure`` finding (a private key
every local user can read) fails ``check-config`` (and so ``systemctl reload``, whose
ExecReload= runs it) but only warns in ``run`` and a SIGHUP reload: refusing to start a proxy
that ran yesterday with the same file would turn a hygiene problem into an outage (sshd
refuses such host keys; its keys are its own, ours are often shared with other services).
"""

from __future__ import annotations

import datetime
import os
import ssl
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from cryptography import x509

from popproxy.policy import ConfigError, Policy, load_config
from popproxy.policy.paths import STDERR_AUDIT_LOG, shown
from popproxy.policy.schema_redis import RedisAuth, RedisSentinel

# Let's Encrypt renews at 30 days left and mails at 20, 10 and 1; two weeks left means renewal
# has failed at least twice: worth a warning at every check, not yet an error.
EXPIRY_WARNING_DAYS = 14
# Group and other permission bits: a private key readable by every local user is a leak
# (packaging/popproxy.service: keys are 0600, or 0640 with group popproxy).
WORLD_READABLE = stat.S_IROTH

Clock = Callable[[], datetime.datetime]


def utcnow() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


@dataclass(frozen=True)
class Finding:
    """One problem with a referenced file: ``key`` is the policy's key path."""

    level: Literal["error", "insecure", "warning"]
    key: str
    path: Path | str
    message: str

    def __str__(self) -> str:
        path = shown(self.path) if isinstance(self.path, Path) else self.path
        return f"{self.key}: {path}: {self.message}"


def _error(key: str, path: Path | str, message: str) -> Finding:
    return Finding("error", key, path, message)


def _readable_file(key: str, path: Path) -> Finding | None:
    """Exists, is a regular file and can be opened for reading by this user."""
    if not path.exists():
        return _error(key, path, "no such file; fix: create it or correct the path (relative "
                                 "paths are relative to the policy's directory)")
    if not path.is_file():
        return _error(key, path, "not a regular file; fix: point the key at a file")
    try:
        with path.open("rb"):
            pass
    except OSError as exc:
        return _error(key, path, f"cannot be read: {exc.strerror or exc}; fix: make it "
                                 "readable by the service user (e.g. chgrp popproxy, "
                                 "chmod g+r)")
    return None


def _writable_dir(key: str, path: Path, what: str) -> Finding | None:
    """``path`` is a writable directory, or can be created (its nearest existing ancestor is a
    writable directory)."""
    probe = path
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if not probe.is_dir():
        return _error(key, path, f"{probe} is not a directory, so the {what} cannot be made "
                                 "there; fix: choose another path")
    if not os.access(probe, os.W_OK | os.X_OK):
        verb = "written" if probe == path else f"created (in {probe})"
        return _error(key, path, f"the {what} cannot be {verb}: permission denied; fix: "
                                 "chown it to the service user, or choose another path")
    return None


def check_certificate(key: str, path: Path, now: datetime.datetime) -> list[Finding]:
    """A PEM certificate that is valid now; a warning when it expires within two weeks."""
    missing = _readable_file(key, path)
    if missing is not None:
        return [missing]
    try:
        cert = x509.load_pem_x509_certificate(path.read_bytes())
    except ValueError:
        return [_error(key, path, "not a PEM certificate; fix: convert it (openssl x509 "
                                  "-inform der -in FILE -out FILE.pem) or correct the path")]
    end, start = cert.not_valid_after_utc, cert.not_valid_before_utc
    if end <= now:
        return [_error(key, path, f"expired on {end:%Y-%m-%d %H:%M} UTC; fix: renew it, "
                                  "then systemctl reload popproxy")]
    if start > now:
        return [_error(key, path, f"not valid before {start:%Y-%m-%d %H:%M} UTC; fix: check "
                                  "the clock, or wait")]
    left = end - now
    if left < datetime.timedelta(days=EXPIRY_WARNING_DAYS):
        return [Finding("warning", key, path, f"expires on {end:%Y-%m-%d} ({left.days} days "
                                              "left); fix: renew it soon")]
    return []


def check_key(key: str, path: Path, cert: Path, cert_ok: bool) -> list[Finding]:
    """Readable, not readable by every user, and the private key of ``cert``."""
    missing = _readable_file(key, path)
    if missing is not None:
        return [missing]
    findings: list[Finding] = []
    mode = path.stat().st_mode
    if mode & WORLD_READABLE:
        findings.append(Finding("insecure", key, path,
                                f"mode {stat.S_IMODE(mode):04o} lets every local user read "
                                f"the private key; fix: chmod 600 {shown(path)} (or 640 with group "
                                "popproxy)"))
    if cert_ok:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        try:
            ctx.load_cert_chain(cert, path)
        except ssl.SSLError as exc:
            if "KEY_VALUES_MISMATCH" in str(exc):
                reason = f"is not the key of {cert}; fix: pair each cert with its own key"
            else:
                reason = (f"cannot be loaded with {cert} ({exc.reason or exc}); fix: an "
                          "unencrypted PEM key (openssl pkey -in KEY -out KEY.pem)")
            findings.append(_error(key, path, reason))
    return findings


def check_ca_file(key: str, path: Path) -> list[Finding]:
    """A PEM bundle OpenSSL can load as trust anchors."""
    missing = _readable_file(key, path)
    if missing is not None:
        return [missing]
    try:
        ssl.create_default_context(cafile=str(path))
    except ssl.SSLError as exc:
        return [_error(key, path, f"not a PEM CA bundle ({exc.reason or exc}); fix: the "
                                  "upstream's CA certificate in PEM form")]
    return []


def _tls_findings(config: Policy, now: datetime.datetime) -> list[Finding]:
    findings: list[Finding] = []
    if not any(listener.mode != "plain" for listener in config.listeners):
        return findings
    for index, pair in enumerate(config.tls.certificates):
        base = f"tls.certificates.{index}"
        cert = check_certificate(f"{base}.cert", pair.cert, now)
        findings += cert
        cert_ok = not any(f.level == "error" for f in cert)
        findings += check_key(f"{base}.key", pair.key, pair.cert, cert_ok)
    if not config.tls.certificates:
        problem = _writable_dir("state_dir", config.state_dir, "self-signed certificate")
        findings += [problem] if problem else []
    return findings


def _upstream_findings(config: Policy) -> list[Finding]:
    findings: list[Finding] = []
    upstreams = {"upstream": config.upstream,
                 **{f"upstreams.{name}": up for name, up in config.upstreams.items()}}
    for prefix, upstream in upstreams.items():
        if upstream.ca_file is not None and upstream.mode != "plain":
            findings += check_ca_file(f"{prefix}.ca_file", upstream.ca_file)
        if upstream.warm_login is not None:
            problem = _readable_file(f"{prefix}.warm_login.password_file",
                                     upstream.warm_login.password_file)
            findings += [problem] if problem else []
    return findings


def _state_findings(config: Policy) -> list[Finding]:
    """state_dir, the quarantine directory, the lockout key, feeds and the audit log."""
    findings: list[Finding | None] = [_writable_dir("state_dir", config.state_dir,
                                                    "state directory")]
    lockout = config.lockout
    if lockout.enabled and lockout.secret_file is not None:
        findings.append(_lockout_key(lockout.secret_file))
    if config.scan.enabled:
        quarantine = config.scan.quarantine_dir or config.state_dir / "quarantine"
        findings.append(_writable_dir("scan.quarantine_dir", quarantine,
                                      "quarantine directory"))
        findings += [_readable_file(f"scan.feeds.{i}", feed)
                     for i, feed in enumerate(config.scan.feeds)]
    for section, shared in (("lockout", config.lockout), ("scan", config.scan)):
        target = shared.redis
        if isinstance(target, RedisAuth) and target.tls and target.tls_ca_file is not None:
            kind = "redis_sentinel" if isinstance(target, RedisSentinel) else "redis_cluster"
            findings += check_ca_file(f"{section}.{kind}.tls_ca_file", target.tls_ca_file)
    audit = config.observability.audit_log
    if audit is not None and audit != STDERR_AUDIT_LOG:
        findings.append(_audit_log(Path(audit)))
    return [finding for finding in findings if finding is not None]


def _lockout_key(path: Path) -> Finding | None:
    """An explicit ``lockout.secret_file`` is read, or made in its existing directory
    (proxy/lockout_guard.py makes no directory for it: it is usually shared by instances)."""
    key = "lockout.secret_file"
    if path.exists():
        return _readable_file(key, path)
    parent = path.parent
    if parent.is_dir() and os.access(parent, os.W_OK | os.X_OK):
        return None
    why = f"{parent} is not writable" if parent.is_dir() else f"{parent} does not exist"
    return _error(key, path, f"no such file, and it cannot be created ({why}); fix: create "
                             "it before starting popproxy (see docs/quickstart.md), or remove "
                             "lockout.secret_file to keep the key in state_dir")


def _audit_log(path: Path) -> Finding | None:
    key = "observability.audit_log"
    if path.exists():
        if not path.is_file():
            return _error(key, path, "not a regular file; fix: point audit_log at a file")
        if not os.access(path, os.W_OK):
            return _error(key, path, "cannot be written: permission denied; fix: chown it "
                                     "to the service user")
        return None
    return _writable_dir(key, path.parent, "audit log")


def check_files(config: Policy, clock: Clock = utcnow) -> list[Finding]:
    """Every problem with the files ``config`` refers to, errors and warnings."""
    now = clock()
    return [*_tls_findings(config, now), *_upstream_findings(config), *_state_findings(config)]


class FileCheckError(ConfigError):
    """``load_checked``'s refusal of a valid policy for the files it names; ``findings`` keep
    each problem's key (the supervisor counts a certificate's as a refused certificate
    reload, as one process's own re-read of the certificates is)."""

    def __init__(self, findings: list[Finding]) -> None:
        super().__init__([str(finding) for finding in findings])
        self.findings = findings


def errors(findings: list[Finding], strict: bool = False) -> list[Finding]:
    """The findings that make a policy unusable (``strict``: also the insecure ones)."""
    failing = ("error", "insecure") if strict else ("error",)
    return [finding for finding in findings if finding.level in failing]


def load_checked(path: Path, clock: Clock = utcnow,
                 strict: bool = False) -> tuple[Policy, list[Finding]]:
    """The policy at ``path``, validated and with every file it refers to checked: what
    ``run`` and a reload accept (``strict``: what ``check-config`` accepts).  Returns the
    policy and the findings that did not fail it.

    Raises ``ConfigError`` whose details are the schema's errors, or ``FileCheckError`` with
    the file errors.
    """
    config = load_config(path)
    findings = check_files(config, clock)
    bad = errors(findings, strict)
    if bad:
        raise FileCheckError(bad)
    return config, [finding for finding in findings if finding not in bad]
