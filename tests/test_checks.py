"""Start-up checks of referenced files (issue 19 item 2): each problem names key, file, fix."""

from __future__ import annotations

import datetime
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from popproxy.checks import (
    EXPIRY_WARNING_DAYS,
    check_certificate,
    check_files,
    errors,
    load_checked,
)
from popproxy.policy import ConfigError, load_config

NOW = datetime.datetime(2026, 12, 4, 12, 0, tzinfo=datetime.UTC)
DAY = datetime.timedelta(days=1)


def write_pair(directory: Path, name: str, not_after: datetime.datetime = NOW + 90 * DAY,
               not_before: datetime.datetime = NOW - DAY) -> tuple[Path, Path]:
    """A self-signed certificate and its key (mode 0600) valid in the given window."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(not_before).not_valid_after(not_after)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = directory / f"{name}.crt", directory / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    key_path.chmod(0o600)
    return cert_path, key_path


def _policy(tmp_path: Path, extra: str = "", certs: str = "") -> Path:
    path = tmp_path / "policy.yaml"
    path.write_text("listeners: [{name: s, port: 1995, mode: tls}]\nstate_dir: state\n"
                    f"tls: {{certificates: [{certs}]}}\n{extra}")
    return path


def _problems(path: Path) -> list[str]:
    return [str(f) for f in errors(check_files(load_config(path), lambda: NOW), strict=True)]


def test_a_usable_policy_has_no_findings(tmp_path: Path) -> None:
    write_pair(tmp_path, "good")
    (tmp_path / "feed.txt").write_text("evil.example\n")
    path = _policy(tmp_path, "scan: {feeds: [feed.txt]}\n"
                             "observability: {audit_log: log/audit.log}\n",
                   "{cert: good.crt, key: good.key}")
    (tmp_path / "log").mkdir()
    assert check_files(load_config(path), lambda: NOW) == []
    config, warnings = load_checked(path, lambda: NOW)
    assert warnings == [] and config.tls.certificates[0].cert == tmp_path / "good.crt"


def test_missing_certificate_key_feed_and_ca_file_are_named_with_the_fix(
        tmp_path: Path) -> None:
    path = _policy(tmp_path, "scan: {feeds: [feeds/none.txt]}\n"
                             "upstream: {mode: tls, ca_file: ca.pem}\n",
                   "{cert: nope.crt, key: nope.key}")
    problems = _problems(path)
    fix = ("no such file; fix: create it or correct the path (relative paths are relative "
           "to the policy's directory)")
    assert problems == [f"tls.certificates.0.cert: {tmp_path}/nope.crt: {fix}",
                        f"tls.certificates.0.key: {tmp_path}/nope.key: {fix}",
                        f"upstream.ca_file: {tmp_path}/ca.pem: {fix}",
                        f"scan.feeds.0: {tmp_path}/feeds/none.txt: {fix}"]


def test_an_expired_certificate_is_an_error_and_a_nearly_expired_one_a_warning(
        tmp_path: Path) -> None:
    old, _ = write_pair(tmp_path, "old", not_after=NOW - DAY)
    assert [str(f) for f in check_certificate("k", old, NOW)] == [
        f"k: {old}: expired on 2026-12-03 12:00 UTC; fix: renew it, then systemctl reload "
        "popproxy"]
    soon, _ = write_pair(tmp_path, "soon", not_after=NOW + 3 * DAY)
    (warning,) = check_certificate("k", soon, NOW)
    assert warning.level == "warning"
    assert warning.message == "expires on 2026-12-07 (3 days left); fix: renew it soon"
    later, _ = write_pair(tmp_path, "later", not_after=NOW + (EXPIRY_WARNING_DAYS + 1) * DAY)
    assert check_certificate("k", later, NOW) == []
    future, _ = write_pair(tmp_path, "future", not_before=NOW + DAY)
    (early,) = check_certificate("k", future, NOW)
    assert early.level == "error" and "not valid before 2026-12-05" in early.message


def test_a_key_of_another_certificate_or_readable_by_all_is_refused(tmp_path: Path) -> None:
    write_pair(tmp_path, "a")
    _, other_key = write_pair(tmp_path, "b")
    other_key.chmod(0o644)
    problems = _problems(_policy(tmp_path, certs="{cert: a.crt, key: b.key}"))
    assert problems == [
        f"tls.certificates.0.key: {other_key}: mode 0644 lets every local user read the "
        f"private key; fix: chmod 600 {other_key} (or 640 with group popproxy)",
        f"tls.certificates.0.key: {other_key}: is not the key of {tmp_path}/a.crt; fix: pair "
        "each cert with its own key"]
    (insecure,) = check_files(load_config(_policy(tmp_path, certs="{cert: b.crt, key: b.key}")),
                              lambda: NOW)
    assert insecure.level == "insecure"  # check-config fails; run and SIGHUP only warn
    assert errors([insecure]) == [] and errors([insecure], strict=True) == [insecure]


def test_a_file_reached_through_dot_dot_is_named_as_the_kernel_reads_it(tmp_path: Path) -> None:
    """Regression (admin review): ``key: ../tls/b.key`` in policies/ was shown as
    ``.../policies/../tls/b.key``, in the finding and in the chmod it suggests."""
    (tmp_path / "tls").mkdir()
    (tmp_path / "policies").mkdir()
    _, key = write_pair(tmp_path / "tls", "b")
    key.chmod(0o644)
    policy = _policy(tmp_path / "policies", certs="{cert: ../tls/b.crt, key: ../tls/b.key}")
    assert _problems(policy) == [
        f"tls.certificates.0.key: {key}: mode 0644 lets every local user read the "
        f"private key; fix: chmod 600 {key} (or 640 with group popproxy)"]


def test_files_that_are_not_pem_are_named(tmp_path: Path) -> None:
    (tmp_path / "x.crt").write_text("not a certificate\n")
    (tmp_path / "ca.pem").write_text("junk\n")
    problems = _problems(_policy(tmp_path, "upstream: {mode: starttls, ca_file: ca.pem}\n",
                                 "{cert: x.crt, key: x.crt}"))
    assert problems[0].startswith(f"tls.certificates.0.cert: {tmp_path}/x.crt: not a PEM "
                                  "certificate; fix: convert it")
    assert problems[-1].startswith(f"upstream.ca_file: {tmp_path}/ca.pem: not a PEM CA bundle")


def test_directories_that_cannot_be_made_are_named(tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("")
    path = _policy(tmp_path, "observability: {audit_log: afile/audit.log}\n"
                             "scan: {quarantine_dir: afile/q}\n"
                             "lockout: {secret_file: afile/key}\n")
    problems = _problems(path)
    assert f"scan.quarantine_dir: {tmp_path}/afile/q: {tmp_path}/afile is not a directory, " \
           "so the quarantine directory cannot be made there; fix: choose another path" in (
               problems)
    assert any(p.startswith(f"observability.audit_log: {tmp_path}/afile: ") for p in problems)
    assert f"lockout.secret_file: {tmp_path}/afile/key: no such file, and it cannot be " \
           f"created ({tmp_path}/afile does not exist); fix: create it before starting " \
           "popproxy (see docs/quickstart.md), or remove lockout.secret_file to keep the key " \
           "in state_dir" in problems
    (tmp_path / "state").write_text("a file where the state directory should be")
    assert any(p.startswith(f"state_dir: {tmp_path}/state: {tmp_path}/state is not a "
                            "directory") for p in _problems(path))


def test_load_checked_raises_the_file_errors_like_schema_errors(tmp_path: Path) -> None:
    path = _policy(tmp_path, certs="{cert: gone.crt, key: gone.key}")
    with pytest.raises(ConfigError) as info:
        load_checked(path, lambda: NOW)
    assert info.value.details[0].startswith(f"tls.certificates.0.cert: {tmp_path}/gone.crt")


def test_plain_only_listeners_need_no_certificate(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text("listeners: [{name: p, port: 110, mode: plain, "
                    "allow_plaintext_login: true}]\ntls: {certificates: [{cert: x, key: y}]}\n")
    assert _problems(path) == []


def test_a_missing_redis_ca_file_is_named_before_the_first_login(tmp_path: Path) -> None:
    """A Sentinel's or Cluster's CA bundle is read lazily, at the first Redis call: a missing
    one would otherwise pass every check and fail every login by the fail mode."""
    write_pair(tmp_path, "good")
    path = _policy(tmp_path, "lockout: {redis_sentinel: {sentinels: ['10.0.7.31:26379'], "
                             "service: popproxy, tls: true, tls_ca_file: redis-ca.pem}}\n"
                             "scan: {redis_cluster: {nodes: ['10.0.7.41:6379'], tls: true, "
                             "tls_ca_file: cluster-ca.pem}}\n",
                   "{cert: good.crt, key: good.key}")
    problems = _problems(path)
    assert any(p.startswith(f"lockout.redis_sentinel.tls_ca_file: {tmp_path}/redis-ca.pem: "
                            "no such file") for p in problems), problems
    assert any(p.startswith(f"scan.redis_cluster.tls_ca_file: {tmp_path}/cluster-ca.pem: "
                            "no such file") for p in problems), problems
