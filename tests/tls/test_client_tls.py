"""Client-facing TLS: implicit TLS and STLS done per RFC 2595, with named attack regressions.

These need real TLS handshakes over TCP.  What the session decides in plaintext before any
handshake (STLS with a command pipelined behind it, CVE-2011-0411; login before TLS) is
tested on the session harness in tests/proxy/test_session_stls.py.
"""

from __future__ import annotations

import poplib
import socket
import ssl
import subprocess
import time
from pathlib import Path

import pytest

from tests.helpers import LoopThread, RunningProxy, running_proxy
from tests.support.waiting import wait_for
from tests.tls.conftest import Pki, tls_config


def _port(proxy: RunningProxy, name: str) -> int:
    return proxy.server.ports[name]


def _recv_until(sock: socket.socket, marker: bytes, timeout: float = 5) -> bytes:
    sock.settimeout(timeout)
    data = b""
    while marker not in data:
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return data


def _recv_all(sock: socket.socket, timeout: float = 5) -> bytes:
    """Everything until the peer closes (raises on timeout: the proxy must close)."""
    sock.settimeout(timeout)
    data = b""
    while chunk := sock.recv(4096):
        data += chunk
    return data


def test_implicit_tls_fetch_with_poplib(tls_proxy: RunningProxy, pki: Pki) -> None:
    client = poplib.POP3_SSL("127.0.0.1", _port(tls_proxy, "tls"), context=pki.client_context())
    assert client.getwelcome().startswith(b"+OK")
    caps = client.capa()
    assert "USER" in caps and "STLS" not in caps
    client.user("demo")
    client.pass_("demo")
    count, _ = client.stat()
    assert count == 3
    assert client.retr(1)[1][-1] == b"This message came through the proxy."
    client.quit()


def test_stls_fetch_with_poplib_and_capa_changes(tls_proxy: RunningProxy, pki: Pki) -> None:
    client = poplib.POP3("127.0.0.1", _port(tls_proxy, "stls"))
    before = client.capa()
    assert "STLS" in before
    assert "USER" not in before and "SASL" not in before  # login is not allowed yet
    client.stls(pki.client_context())
    after = client.capa()
    assert "STLS" not in after
    assert "USER" in after and after["SASL"] == ["PLAIN", "LOGIN"]
    client.user("demo")
    client.pass_("demo")
    assert client.stat()[0] == 3
    client.quit()


def test_stls_injection_split_across_segments(tls_proxy: RunningProxy) -> None:
    """Plaintext that arrives after +OK is fed to TLS, so it kills the handshake instead."""
    with socket.create_connection(("127.0.0.1", _port(tls_proxy, "stls"))) as sock:
        _recv_until(sock, b"\r\n")
        sock.sendall(b"STLS\r\n")
        assert _recv_until(sock, b"\r\n") == b"+OK begin TLS negotiation\r\n"
        sock.sendall(b"CAPA\r\n")
        rest = _recv_all(sock)
    assert b"+OK" not in rest and b"TOP" not in rest  # no CAPA answer, in clear or otherwise


def test_session_fixation_user_before_stls(tls_proxy: RunningProxy, pki: Pki) -> None:
    """A USER accepted before STLS must be forgotten: PASS inside TLS needs a new USER."""
    config = tls_proxy.server.config
    assert not config.listeners[0].allow_plaintext_login  # so USER is refused pre-TLS anyway
    client = poplib.POP3("127.0.0.1", _port(tls_proxy, "stls"))
    with pytest.raises(poplib.error_proto, match=r"TLS is required"):
        client.user("demo")
    client.stls(pki.client_context())
    with pytest.raises(poplib.error_proto, match=r"USER first"):
        client.pass_("demo")
    client.user("demo")
    assert client.pass_("demo").startswith(b"+OK")
    client.quit()


def test_stls_twice(tls_proxy: RunningProxy, pki: Pki) -> None:
    client = poplib.POP3("127.0.0.1", _port(tls_proxy, "stls"))
    client.stls(pki.client_context())
    with pytest.raises(poplib.error_proto, match=r"already active"):
        client._shortcmd("STLS")  # type: ignore[attr-defined]
    client.quit()


def test_stls_refused_on_implicit_tls_listener(tls_proxy: RunningProxy, pki: Pki) -> None:
    client = poplib.POP3_SSL("127.0.0.1", _port(tls_proxy, "tls"), context=pki.client_context())
    with pytest.raises(poplib.error_proto, match=r"already active"):
        client._shortcmd("STLS")  # type: ignore[attr-defined]
    client.quit()


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion:DeprecationWarning")
def test_tls_1_1_refused(tls_proxy: RunningProxy, pki: Pki) -> None:
    ctx = pki.client_context()
    ctx.minimum_version = ssl.TLSVersion.TLSv1
    ctx.maximum_version = ssl.TLSVersion.TLSv1_1
    ctx.set_ciphers("ALL:@SECLEVEL=0")
    with pytest.raises((ssl.SSLError, ConnectionError)):
        poplib.POP3_SSL("127.0.0.1", _port(tls_proxy, "tls"), context=ctx, timeout=5)
    # and the listener still serves a modern client afterwards
    ok = poplib.POP3_SSL("127.0.0.1", _port(tls_proxy, "tls"), context=pki.client_context())
    assert ok.getwelcome().startswith(b"+OK")
    ok.quit()


def test_tls_1_2_still_accepted(tls_proxy: RunningProxy, pki: Pki) -> None:
    ctx = pki.client_context()
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    client = poplib.POP3_SSL("127.0.0.1", _port(tls_proxy, "tls"), context=ctx)
    assert isinstance(client.sock, ssl.SSLSocket)
    assert client.sock.version() == "TLSv1.2"
    client.quit()


def test_garbage_instead_of_client_hello_is_dropped(tls_proxy: RunningProxy) -> None:
    with socket.create_connection(("127.0.0.1", _port(tls_proxy, "tls"))) as sock:
        sock.sendall(b"USER demo\r\n")
        data = _recv_all(sock)
    assert b"+OK" not in data  # the handshake failed; nothing was served in clear


def test_silent_client_is_dropped_after_handshake_timeout(
    pki: Pki, loop: LoopThread, tmp_path: Path
) -> None:
    config = tls_config(
        pki,
        9,
        tmp_path,
        tls={
            "certificates": [{"cert": str(pki.server_pem), "key": str(pki.server_pem)}],
            "handshake_timeout": 0.3,
        },
    )
    with (
        running_proxy(config, loop) as proxy,
        socket.create_connection(("127.0.0.1", _port(proxy, "tls"))) as sock,
    ):
        started = time.monotonic()
        assert _recv_all(sock, timeout=5) == b""
        assert time.monotonic() - started < 3


def test_curl_pop3s_and_ssl_reqd(tls_proxy: RunningProxy, pki: Pki) -> None:
    for url, extra in (
        (f"pop3s://127.0.0.1:{_port(tls_proxy, 'tls')}/1", []),
        (f"pop3://127.0.0.1:{_port(tls_proxy, 'stls')}/1", ["--ssl-reqd"]),
    ):
        out = subprocess.run(
            ["curl", "-s", "--cacert", str(pki.ca_file), *extra, "-u", "demo:demo", url],
            capture_output=True,
            timeout=30,
            check=True,
        ).stdout
        assert out.endswith(b"This message came through the proxy.\r\n")


def test_curl_without_tls_cannot_log_in(tls_proxy: RunningProxy) -> None:
    result = subprocess.run(
        ["curl", "-s", "-u", "demo:demo", f"pop3://127.0.0.1:{_port(tls_proxy, 'stls')}/1"],
        capture_output=True,
        timeout=30,
    )
    assert result.returncode == 67  # CURLE_LOGIN_DENIED: USER got -ERR before TLS
    assert b"came through" not in result.stdout


def test_many_sequential_tls_sessions_do_not_leak(tls_proxy: RunningProxy, pki: Pki) -> None:
    ctx = pki.client_context()
    for _ in range(20):
        client = poplib.POP3_SSL("127.0.0.1", _port(tls_proxy, "tls"), context=ctx)
        client.user("demo")
        client.pass_("demo")
        client.quit()
    wait_for(lambda: tls_proxy.server.session_count == 0, what="every session to end")


def test_tls13_session_resumes_with_the_one_ticket_sent(tls_proxy: RunningProxy,
                                                        pki: Pki) -> None:
    """One TLS 1.3 ticket per handshake (TLS13_SESSION_TICKETS, RFC 8446 s4.6.1) is enough for a
    client that reconnects: the second connection resumes (no certificate signature)."""
    ctx = pki.client_context()
    tickets: list[object] = []

    def seen(conn: object, direction: str, version: object, content_type: object,
             msg_type: object, data: bytes) -> None:
        if direction == "read" and msg_type == ssl._TLSMessageType.NEWSESSION_TICKET:  # type: ignore[attr-defined]
            tickets.append(msg_type)

    ctx._msg_callback = seen  # type: ignore[attr-defined]  # CPython's message hook, for tests
    first = poplib.POP3_SSL("127.0.0.1", _port(tls_proxy, "tls"), context=ctx)
    first.user("demo")
    first.pass_("demo")  # the tickets arrive with the first replies after the handshake
    sock = first.sock
    assert isinstance(sock, ssl.SSLSocket) and sock.version() == "TLSv1.3"
    session = sock.session
    first.quit()
    assert len(tickets) == 1
    with socket.create_connection(("127.0.0.1", _port(tls_proxy, "tls"))) as raw, \
            ctx.wrap_socket(raw, server_hostname="localhost", session=session) as again:
        assert again.recv(100).startswith(b"+OK")
        assert again.session_reused
