"""A real HAProxy sending PROXY protocol v2 in front of popproxy: policy sees the real client.

HAProxy (TCP mode, ``send-proxy-v2``, connecting from 127.0.0.1) is started per test in front
of an in-process popproxy listener that trusts only 127.0.0.1 for PROXY headers.  Clients connect
to HAProxy from chosen loopback source addresses (127.0.0.2, 127.0.0.3, ...), so every allow,
deny and per-user decision can only come out right if popproxy used the address in the header,
not HAProxy's.
"""

from __future__ import annotations

import ipaddress
import logging
import poplib
import socket
import ssl
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import trustme

from popproxy.proxy.demo_upstream import DemoUpstream
from tests.helpers import LoopThread, RunningProxy, make_config, running_proxy
from tests.integration.haproxy import HAProxy, running_haproxy

HAPROXY_SOURCE = "127.0.0.1"  # the backend ``source``: the only address popproxy trusts
ALLOWED, OTHER, OUTSIDER = "127.0.0.2", "127.0.0.3", "127.0.0.4"
WELCOME = b"This message came through the proxy."
V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"


def _listener(mode: str = "plain", **extra: Any) -> list[dict[str, Any]]:
    listener: dict[str, Any] = {
        "name": "pop3", "host": "127.0.0.1", "port": 1, "mode": mode,
        "proxy_protocol": {"trusted": [f"{HAPROXY_SOURCE}/32"], "header_timeout": 5},
        **extra,
    }
    if mode == "plain":
        listener["allow_plaintext_login"] = True
    return [listener]


@dataclass
class Stack:
    proxy: RunningProxy
    haproxy: HAProxy


@contextmanager
def _stack(loop: LoopThread, demo: DemoUpstream, **overrides: Any) -> Iterator[Stack]:
    """popproxy (listener overrides applied) with a fresh HAProxy in front of it."""
    with running_proxy(make_config(demo.port, **overrides), loop) as proxy, \
            running_haproxy(proxy.port, source=HAPROXY_SOURCE) as haproxy:
        yield Stack(proxy, haproxy)


class Pop3From(poplib.POP3):
    """``poplib.POP3`` from a chosen source address, optionally over implicit TLS."""

    def __init__(self, port: int, source: str, context: ssl.SSLContext | None = None) -> None:
        self.source = source
        self.context = context
        self.source_port = 0
        super().__init__("127.0.0.1", port, timeout=5)

    def _create_socket(self, timeout: float) -> socket.socket:
        sock = socket.create_connection((self.host, self.port), timeout,
                                        source_address=(self.source, 0))
        self.source_port = int(sock.getsockname()[1])
        if self.context is not None:
            return self.context.wrap_socket(sock, server_hostname="localhost")
        return sock


def _first_bytes(port: int, source: str, send: bytes = b"", until_close: bool = False) -> bytes:
    """Connect from ``source`` (sending ``send``), return what arrives before the first CRLF
    (or ``until_close``) or the close; b"" means closed without a word."""
    with socket.socket() as sock:
        sock.settimeout(5)
        sock.bind((source, 0))
        sock.connect(("127.0.0.1", port))
        if send:
            sock.sendall(send)
        data = b""
        try:
            while (until_close or b"\r\n" not in data) and (chunk := sock.recv(4096)):
                data += chunk
        except ConnectionResetError:
            pass
    return data


def _fetch_welcome(port: int, source: str, context: ssl.SSLContext | None = None) -> int:
    """Log in as demo/demo from ``source``, RETR message 1, QUIT; return the source port."""
    client = Pop3From(port, source, context)
    assert client.getwelcome().startswith(b"+OK")
    client.user("demo")
    client.pass_("demo")
    assert client.retr(1)[1][-1] == WELCOME
    client.quit()
    return client.source_port


def _v2_header(source: str) -> bytes:
    """A well-formed PROXY v2 header (TCP over IPv4) claiming ``source`` as the client."""
    body = (ipaddress.ip_address(source).packed + ipaddress.ip_address("127.0.0.1").packed
            + struct.pack("!HH", 40000, 110))
    return V2_SIGNATURE + b"\x21\x11" + struct.pack("!H", len(body)) + body


def _refusal(log_text: str, ip: str, reason: str) -> bool:
    """Did popproxy log refusing ``ip`` at connect time for ``reason``?"""
    return any(f"connection from {ip} refused" in line and reason in line
               for line in log_text.splitlines())


@pytest.fixture
def popproxy_log(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.DEBUG, logger="popproxy")
    return caplog


def test_allow_list_acts_on_the_client_address_from_haproxy(
    loop_thread: LoopThread, demo_upstream: DemoUpstream, popproxy_log: pytest.LogCaptureFixture
) -> None:
    with _stack(loop_thread, demo_upstream,
                listeners=_listener(allow=[f"{ALLOWED}/32"])) as stack:
        source_port = _fetch_welcome(stack.haproxy.port, ALLOWED)
        # HAProxy's own address (127.0.0.1) is not allowed: only 127.0.0.2 could have got in.
        assert _first_bytes(stack.haproxy.port, OTHER) == b""
    text = popproxy_log.text
    # the client's own source port travelled in the header too
    assert f"session {ALLOWED}:{source_port}: login ok" in text
    assert _refusal(text, OTHER, "source network not in listener allow list")
    assert "untrusted" not in text and "bad or missing PROXY header" not in text
    assert demo_upstream.commands_seen.count(b"PASS") == 1


def test_deny_list_acts_on_the_client_address_from_haproxy(
    loop_thread: LoopThread, demo_upstream: DemoUpstream, popproxy_log: pytest.LogCaptureFixture
) -> None:
    with _stack(loop_thread, demo_upstream,
                listeners=_listener(deny=[f"{OTHER}/32"])) as stack:
        # HAProxy's address (127.0.0.1) is not denied: only the header can get 127.0.0.3 denied.
        assert _first_bytes(stack.haproxy.port, OTHER) == b""
        _fetch_welcome(stack.haproxy.port, ALLOWED)
    assert _refusal(popproxy_log.text, OTHER, "source network denied by listener")


def test_direct_connection_from_untrusted_peer_is_refused(
    loop_thread: LoopThread, demo_upstream: DemoUpstream, popproxy_log: pytest.LogCaptureFixture
) -> None:
    with _stack(loop_thread, demo_upstream,
                listeners=_listener(allow=[f"{ALLOWED}/32"])) as stack:
        direct = stack.proxy.port
        # Bypassing HAProxy: no header, and a forged header claiming an allowed client.
        assert _first_bytes(direct, OUTSIDER) == b""
        assert _first_bytes(direct, OUTSIDER, send=_v2_header(ALLOWED)) == b""
        # The same forged header is honoured from HAProxy's (trusted) address: the refusal
        # above was about the peer, not about the header.
        assert _first_bytes(direct, HAPROXY_SOURCE, send=_v2_header(ALLOWED)).startswith(b"+OK")
        # and the path through HAProxy still works
        _fetch_welcome(stack.haproxy.port, ALLOWED)
    assert popproxy_log.text.count(f"PROXY header from untrusted peer {OUTSIDER} on pop3") == 2
    assert demo_upstream.commands_seen.count(b"PASS") == 1


def test_per_user_rule_sees_the_client_address_from_haproxy(
    loop_thread: LoopThread, demo_upstream: DemoUpstream, popproxy_log: pytest.LogCaptureFixture
) -> None:
    with _stack(loop_thread, demo_upstream,
                listeners=_listener(allow=[f"{ALLOWED}/32", f"{OTHER}/32"]),
                users=[{"match": "demo", "allow": [f"{ALLOWED}/32"]}]) as stack:
        client = Pop3From(stack.haproxy.port, OTHER)
        assert client.getwelcome().startswith(b"+OK")  # the listener lets 127.0.0.3 in
        client.user("demo")
        with pytest.raises(poplib.error_proto, match=r"-ERR \[AUTH\] authentication failed"):
            client.pass_("demo")
        client.quit()
        _fetch_welcome(stack.haproxy.port, ALLOWED)
    assert any(f"session {OTHER}:{client.source_port}: login" in line and "denied" in line
               for line in popproxy_log.text.splitlines())
    # the denied login never reached the upstream: the policy said no, not the password check
    assert demo_upstream.commands_seen.count(b"PASS") == 1


@pytest.fixture
def server_pem(tmp_path: Path) -> tuple[trustme.CA, Path]:
    """A trustme CA and popproxy's certificate + key (localhost, 127.0.0.1) in one PEM file."""
    ca = trustme.CA()
    pem = tmp_path / "server.pem"
    ca.issue_cert("localhost", "127.0.0.1").private_key_and_cert_chain_pem.write_to_path(str(pem))
    return ca, pem


def _tls_overrides(pem: Path, **listener: Any) -> dict[str, Any]:
    return {"tls": {"certificates": [{"cert": str(pem), "key": str(pem)}]},
            "listeners": _listener("tls", **listener)}


def _tls_greeting(port: int, source: str, context: ssl.SSLContext) -> bytes:
    """The POP3 greeting over TLS from ``source``; b"" if the handshake or the session ends
    first."""
    try:
        client = Pop3From(port, source, context)
    except (OSError, poplib.error_proto):
        return b""
    welcome = client.getwelcome()
    client.close()
    return welcome


def test_implicit_tls_listener_behind_haproxy_passthrough(
    loop_thread: LoopThread, demo_upstream: DemoUpstream, server_pem: tuple[trustme.CA, Path],
    popproxy_log: pytest.LogCaptureFixture,
) -> None:
    ca, pem = server_pem
    context = ssl.create_default_context()
    ca.configure_trust(context)  # verifies popproxy's own certificate, through HAProxy
    with _stack(loop_thread, demo_upstream,
                **_tls_overrides(pem, allow=[f"{ALLOWED}/32"])) as stack:
        source_port = _fetch_welcome(stack.haproxy.port, ALLOWED, context)
        assert _tls_greeting(stack.haproxy.port, OTHER, context) == b""
    assert f"session {ALLOWED}:{source_port}: login ok" in popproxy_log.text
    assert _refusal(popproxy_log.text, OTHER, "source network not in listener allow list")


def _client_hello(context: ssl.SSLContext) -> bytes:
    """The bytes of a TLS ClientHello, as a client sends them right after connecting."""
    tls = context.wrap_bio(ssl.MemoryBIO(), outgoing := ssl.MemoryBIO(),
                           server_hostname="localhost")
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


def test_refused_client_gets_no_tls_handshake(
    loop_thread: LoopThread, demo_upstream: DemoUpstream, server_pem: tuple[trustme.CA, Path]
) -> None:
    # Deterministic form of what HAProxy does whenever the client's ClientHello is ready when
    # it connects to the backend: the PROXY header and the ClientHello in one segment.  Through
    # HAProxy the same leak shows up on roughly half the connections.
    ca, pem = server_pem
    context = ssl.create_default_context()
    ca.configure_trust(context)
    with running_proxy(make_config(demo_upstream.port,
                                   **_tls_overrides(pem, allow=[f"{ALLOWED}/32"])),
                       loop_thread) as proxy:
        sent = _v2_header(OTHER) + _client_hello(context)
        assert _first_bytes(proxy.port, HAPROXY_SOURCE, send=sent, until_close=True) == b""
