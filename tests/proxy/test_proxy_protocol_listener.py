"""PROXY protocol on a listener: only from trusted peers, header first, real address used."""

from __future__ import annotations

import ipaddress
import socket
import ssl
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import trustme

from popproxy.proxy.demo_upstream import DemoUpstream
from tests.helpers import LoopThread, RunningProxy, make_config, running_proxy

V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"


def v1(source: str, sport: int = 40000) -> bytes:
    family = "TCP6" if ":" in source else "TCP4"
    dest = "::1" if ":" in source else "127.0.0.1"
    return f"PROXY {family} {source} {dest} {sport} 110\r\n".encode()


def v2(source: str, sport: int = 40000, command: int = 1) -> bytes:
    src = ipaddress.ip_address(source)
    dst = ipaddress.ip_address("127.0.0.1")
    body = src.packed + dst.packed + struct.pack("!HH", sport, 110)
    return V2_SIGNATURE + bytes([0x20 | command, 0x11]) + struct.pack("!H", len(body)) + body


def _listener(mode: str = "plain", **extra: Any) -> list[dict[str, Any]]:
    base: dict[str, Any] = {"name": "pop3", "host": "127.0.0.1", "port": 1, "mode": mode,
                            "proxy_protocol": {"trusted": ["127.0.0.1/32"], "header_timeout": 1}}
    if mode == "plain":
        base["allow_plaintext_login"] = True
    return [{**base, **extra}]


@contextmanager
def _proxy(loop: LoopThread, demo: DemoUpstream, **overrides: Any) -> Iterator[RunningProxy]:
    with running_proxy(make_config(demo.port, **overrides), loop) as proxy:
        yield proxy


def _exchange(port: int, header: bytes, source: str = "127.0.0.1",
              then: bytes = b"") -> bytes:
    """Send ``header`` (+ ``then``), return everything the proxy sends until it closes."""
    with socket.socket() as sock:
        sock.settimeout(5)
        sock.bind((source, 0))
        sock.connect(("127.0.0.1", port))
        sock.sendall(header + then)
        data = b""
        try:
            while chunk := sock.recv(4096):
                data += chunk
                if b"\r\n" in data and not then:
                    break
        except ConnectionResetError:
            pass
    return data


@pytest.mark.parametrize("encode", [v1, v2])
def test_allow_list_acts_on_the_real_client_address(
    encode: Any, loop_thread: LoopThread, demo_upstream: DemoUpstream
) -> None:
    with _proxy(loop_thread, demo_upstream,
                listeners=_listener(allow=["10.0.0.0/8"])) as proxy:
        assert _exchange(proxy.port, encode("10.1.2.3")).startswith(b"+OK")
        assert _exchange(proxy.port, encode("192.0.2.1")) == b""


def test_ipv6_source_in_v2_header(loop_thread: LoopThread, demo_upstream: DemoUpstream) -> None:
    with _proxy(loop_thread, demo_upstream,
                listeners=_listener(allow=["2001:db8::/32"])) as proxy:
        header = (V2_SIGNATURE + bytes([0x21, 0x21]) + struct.pack("!H", 36)
                  + ipaddress.ip_address("2001:db8::7").packed
                  + ipaddress.ip_address("::1").packed + struct.pack("!HH", 5000, 110))
        assert _exchange(proxy.port, header).startswith(b"+OK")


def test_header_from_untrusted_peer_is_refused(loop_thread: LoopThread,
                                               demo_upstream: DemoUpstream) -> None:
    with _proxy(loop_thread, demo_upstream, listeners=_listener()) as proxy:
        assert _exchange(proxy.port, v2("10.1.2.3"), source="127.0.0.5") == b""
        assert _exchange(proxy.port, v2("10.1.2.3")).startswith(b"+OK")


@pytest.mark.parametrize("first_bytes", [
    b"USER demo\r\n",                       # no header at all
    b"PROXY TCP4 10.1.2.3 127.0.0.1 1 2\n",  # bare LF (v1 needs CRLF)
    b"PROXY TCP4 " + b"1" * 120 + b"\r\n",   # v1 line over 107 bytes
    V2_SIGNATURE + b"\x31\x11\x00\x0c" + b"\0" * 12,  # v2 with version 3
])
def test_missing_or_malformed_header_closes(first_bytes: bytes, loop_thread: LoopThread,
                                            demo_upstream: DemoUpstream) -> None:
    with _proxy(loop_thread, demo_upstream, listeners=_listener()) as proxy:
        assert _exchange(proxy.port, first_bytes) == b""
    assert demo_upstream.commands_seen == []


def test_slow_header_times_out(loop_thread: LoopThread, demo_upstream: DemoUpstream) -> None:
    with _proxy(loop_thread, demo_upstream, listeners=_listener()) as proxy, \
            socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as sock:
        sock.sendall(b"PROXY TCP4 ")
        assert sock.recv(100) == b""  # closed after header_timeout (1 s)


def test_commands_after_the_header_in_the_same_segment_are_kept(
    loop_thread: LoopThread, demo_upstream: DemoUpstream
) -> None:
    with _proxy(loop_thread, demo_upstream, listeners=_listener()) as proxy:
        data = _exchange(proxy.port, v1("10.9.9.9"), then=b"USER demo\r\nPASS demo\r\nQUIT\r\n")
    assert data.count(b"+OK") == 4  # greeting, USER, PASS, QUIT


def test_local_command_uses_the_socket_address(loop_thread: LoopThread,
                                               demo_upstream: DemoUpstream) -> None:
    local = V2_SIGNATURE + bytes([0x20, 0x00]) + b"\x00\x00"
    with _proxy(loop_thread, demo_upstream,
                listeners=_listener(allow=["127.0.0.1/32"])) as proxy:
        assert _exchange(proxy.port, local).startswith(b"+OK")


def test_header_comes_before_the_tls_handshake(loop_thread: LoopThread,
                                               demo_upstream: DemoUpstream,
                                               tmp_path: Path) -> None:
    ca = trustme.CA()
    pem = tmp_path / "server.pem"
    ca.issue_cert("localhost").private_key_and_cert_chain_pem.write_to_path(str(pem))
    tls = {"certificates": [{"cert": str(pem), "key": str(pem)}]}
    with _proxy(loop_thread, demo_upstream, listeners=_listener("tls", allow=["10.0.0.0/8"]),
                tls=tls) as proxy:
        ctx = ssl.create_default_context()
        ca.configure_trust(ctx)
        with socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as raw:
            raw.sendall(v2("10.1.2.3"))
            with ctx.wrap_socket(raw, server_hostname="localhost") as sock:
                assert sock.recv(100).startswith(b"+OK")
