"""The proxy in front of a real Dovecot with TLS on (trustme certificate for a name only).

Upstream STLS and implicit TLS carry the login and the mail exactly as Dovecot serves it; a
certificate that fails verification (wrong name, unknown CA) or a TLS version below the
configured minimum ends the client's PASS with ``-ERR [SYS/TEMP]`` and Dovecot never sees the
user name or password (checked in Dovecot's own log, with ``auth_verbose = yes``).
"""

from __future__ import annotations

import logging
import poplib
import re
import socket
import ssl

import pytest

from popproxy.policy import Policy
from tests.helpers import LoopThread, make_config, running_proxy
from tests.integration.conftest import DovecotPki
from tests.integration.dovecot import Dovecot
from tests.integration.mailboxes import User
from tests.integration.rawpop import wait_for

pytestmark = pytest.mark.dovecot

MODES = ["starttls", "tls"]
USER = "alice"  # six messages: dot lines, 8-bit, no final newline, 4 MiB
SYS_TEMP = r"^b'-ERR \[SYS/TEMP\]"

Fetched = tuple[tuple[int, int], list[tuple[bytes, list[bytes], int]]]


def _upstream_port(dovecot: Dovecot, mode: str) -> int:
    """STLS on the plain listener, implicit TLS on the pop3s listener."""
    if mode == "starttls":
        return dovecot.port
    assert dovecot.tls_port is not None
    return dovecot.tls_port


def _config(dovecot: Dovecot, mode: str, **upstream: object) -> Policy:
    data = make_config(_upstream_port(dovecot, mode)).model_dump(mode="json")
    data["upstream"].update({"mode": mode, **upstream})
    return Policy.model_validate(data)


def _verified(dovecot: Dovecot, pki: DovecotPki, mode: str, **upstream: object) -> Policy:
    return _config(dovecot, mode, ca_file=str(pki.ca_file), server_name=pki.server_name,
                   **upstream)


def _fetch(client: poplib.POP3, user: User) -> Fetched:
    """USER/PASS, STAT and RETR of every message, then QUIT."""
    try:
        client.user(user.name)
        assert client.pass_(user.password).startswith(b"+OK")
        stat = client.stat()
        messages = [client.retr(n) for n in range(1, stat[0] + 1)]
        assert client.quit().startswith(b"+OK")
    finally:
        client.close()
    return stat, messages


def _login_lines(log: str, user: str) -> list[str]:
    """Dovecot log lines that show ``user`` trying to log in: the login process's ``Login:``
    and ``auth failed`` lines (``user=<NAME>``), the passdb lookup (``passwd-file(NAME,``,
    from ``auth_verbose``) and the mail process (``pop3(NAME)``)."""
    name = re.escape(user)
    pattern = re.compile(rf"user=<{name}>|passwd-file\({name},|pop3\({name}\)")
    return [line for line in log.splitlines() if pattern.search(line)]


def _successful_logins(dovecot: Dovecot, mark: int, user: str, count: int) -> list[str]:
    """Wait until ``count`` sessions of ``user`` since ``mark`` have logged in and out (so no
    late line of theirs lands in the next test's log window); return the ``Login:`` lines."""

    def logins() -> list[str]:
        return [ln for ln in _login_lines(dovecot.log_text(mark), user) if "Login: " in ln]

    def logged_out() -> int:
        lines = _login_lines(dovecot.log_text(mark), user)
        return sum(1 for ln in lines if f"pop3({user})" in ln and "Disconnected" in ln)

    wait_for(lambda: len(logins()) >= count and logged_out() >= count,
             what=f"{count} logins of {user} in the Dovecot log")
    return logins()


def _refused_without_login(dovecot: Dovecot, config: Policy, loop_thread: LoopThread,
                           caplog: pytest.LogCaptureFixture, reason: str) -> str:
    """PASS through the proxy gets -ERR [SYS/TEMP] for ``reason`` (in the proxy's log) and
    Dovecot sees no login attempt; returns Dovecot's log line for the refused connection."""
    user = dovecot.users[USER]
    mark = dovecot.log_size()
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="popproxy"), \
            running_proxy(config, loop_thread) as proxy:
        client = poplib.POP3("127.0.0.1", proxy.port, timeout=10)
        try:
            client.user(user.name)
            with pytest.raises(poplib.error_proto, match=SYS_TEMP):
                client.pass_(user.password)
        finally:
            client.close()
    failures = [r.getMessage() for r in caplog.records if "upstream failed" in r.getMessage()]
    assert len(failures) == 1 and reason in failures[0], failures

    # Dovecot logs a connection when it ends (or when it logs in, if credentials leaked):
    # wait for that line of the proxy's connection, then check what Dovecot saw.
    def disconnects() -> list[str]:
        return [ln for ln in dovecot.log_text(mark).splitlines()
                if "pop3-login:" in ln and "Disconnected" in ln]

    def leaked() -> list[str]:
        return _login_lines(dovecot.log_text(mark), user.name)

    wait_for(lambda: bool(disconnects() or leaked()), what="Dovecot to log the proxy's connection")
    log = dovecot.log_text(mark)
    assert leaked() == [], f"credentials reached Dovecot:\n{log}"
    assert len(disconnects()) == 1, log
    line = disconnects()[0]
    assert "(no auth attempts" in line and "user=<>" in line, log
    # Dovecot does not log a USER without PASS: the connection must have died in the handshake.
    assert "TLS handshaking" in line, log
    return line


def _reference_context(pki: DovecotPki) -> ssl.SSLContext:
    """For direct connections to Dovecot by address: the chain is checked, the name (which is
    not 127.0.0.1) is the proxy's job and tested through it."""
    ctx = ssl.create_default_context(cafile=str(pki.ca_file))
    ctx.check_hostname = False
    return ctx


# ------------------------------------------------------------------------ verified TLS works
@pytest.mark.parametrize("mode", MODES)
def test_verified_upstream_tls_relays_like_direct(
    mode: str, dovecot_tls: Dovecot, dovecot_pki: DovecotPki, loop_thread: LoopThread
) -> None:
    user = dovecot_tls.users[USER]
    mark = dovecot_tls.log_size()
    with running_proxy(_verified(dovecot_tls, dovecot_pki, mode), loop_thread) as proxy:
        proxied = _fetch(poplib.POP3("127.0.0.1", proxy.port, timeout=10), user)

    # The log check the refusal tests rely on does see a login: exactly the proxy's, over TLS
    # (Dovecot writes "secured" instead of "TLS" for a plaintext loopback login).
    logins = _successful_logins(dovecot_tls, mark, user.name, 1)
    assert len(logins) == 1 and ", TLS, " in logins[0], logins

    assert dovecot_tls.tls_port is not None
    direct = _fetch(poplib.POP3_SSL("127.0.0.1", dovecot_tls.tls_port, timeout=10,
                                    context=_reference_context(dovecot_pki)), user)
    _successful_logins(dovecot_tls, mark, user.name, 2)
    assert proxied == direct
    stat, messages = proxied
    assert stat == (len(user.messages), sum(m.octets for m in user.messages))
    for (status, lines, _), msg in zip(messages, user.messages, strict=True):
        assert status == f"+OK {msg.octets} octets".encode()
        assert b"\r\n".join(lines) + b"\r\n" == msg.wire, msg.label


# --------------------------------------------------------- failed verification: no credentials
@pytest.mark.parametrize("mode", MODES)
def test_hostname_mismatch_refused_before_credentials(
    mode: str, dovecot_tls: Dovecot, dovecot_pki: DovecotPki, loop_thread: LoopThread,
    caplog: pytest.LogCaptureFixture,
) -> None:
    config = _config(dovecot_tls, mode, ca_file=str(dovecot_pki.ca_file),
                     server_name="wrong.example")
    _refused_without_login(dovecot_tls, config, loop_thread, caplog,
                           "certificate verification failed: Hostname mismatch")


@pytest.mark.parametrize("mode", MODES)
def test_untrusted_ca_refused_before_credentials(
    mode: str, dovecot_tls: Dovecot, dovecot_pki: DovecotPki, loop_thread: LoopThread,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # The right name, but no ca_file: the system CAs do not know the trustme CA.
    config = _config(dovecot_tls, mode, server_name=dovecot_pki.server_name)
    _refused_without_login(dovecot_tls, config, loop_thread, caplog,
                           "certificate verification failed: unable to get local issuer")


# ------------------------------------------------------------------- explicit opt-out works
@pytest.mark.parametrize("mode", MODES)
def test_verify_false_accepts_mismatched_name_and_warns(
    mode: str, dovecot_tls: Dovecot, loop_thread: LoopThread, caplog: pytest.LogCaptureFixture
) -> None:
    user = dovecot_tls.users[USER]
    mark = dovecot_tls.log_size()
    # Wrong name and no CA: both checks would fail; verify: false turns them off.
    config = _config(dovecot_tls, mode, server_name="wrong.example", verify=False)
    with caplog.at_level(logging.WARNING, logger="popproxy"), \
            running_proxy(config, loop_thread) as proxy:
        stat, _ = _fetch(poplib.POP3("127.0.0.1", proxy.port, timeout=10), user)
    assert stat[0] == len(user.messages)
    warnings = [r for r in caplog.records if "verification is OFF" in r.getMessage()]
    assert len(warnings) == 1 and warnings[0].levelno == logging.WARNING
    logins = _successful_logins(dovecot_tls, mark, user.name, 1)
    assert len(logins) == 1 and ", TLS, " in logins[0], logins


# ------------------------------------------------------------------- minimum TLS version
def test_tls12_dovecot_speaks_at_most_tls12(dovecot_tls12: Dovecot, dovecot_pki: DovecotPki
                                            ) -> None:
    """The fixture's premise (Dovecot 2.3 has no ssl_max_protocol; see TlsSetup)."""
    assert dovecot_tls12.tls_port is not None
    ctx = _reference_context(dovecot_pki)
    with socket.create_connection(("127.0.0.1", dovecot_tls12.tls_port), timeout=5) as raw, \
            ctx.wrap_socket(raw) as tls:
        assert tls.version() == "TLSv1.2"
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    with socket.create_connection(("127.0.0.1", dovecot_tls12.tls_port), timeout=5) as raw, \
            pytest.raises(ssl.SSLError):
        ctx.wrap_socket(raw)


@pytest.mark.parametrize("mode", MODES)
def test_tls13_minimum_refuses_tls12_upstream(
    mode: str, dovecot_tls12: Dovecot, dovecot_pki: DovecotPki, loop_thread: LoopThread,
    caplog: pytest.LogCaptureFixture,
) -> None:
    config = _verified(dovecot_tls12, dovecot_pki, mode, tls_min_version="TLSv1.3")
    line = _refused_without_login(dovecot_tls12, config, loop_thread, caplog,
                                  "TLS handshake failed")
    assert "unsupported protocol" in line, line

    # Control: the same upstream with the default minimum (TLS 1.2) logs in.
    user = dovecot_tls12.users[USER]
    mark = dovecot_tls12.log_size()
    with running_proxy(_verified(dovecot_tls12, dovecot_pki, mode), loop_thread) as proxy:
        stat, _ = _fetch(poplib.POP3("127.0.0.1", proxy.port, timeout=10), user)
    assert stat[0] == len(user.messages)
    assert len(_successful_logins(dovecot_tls12, mark, user.name, 1)) == 1
