"""Pre-login exhaustion: the login deadline, per-/64 session caps, over-capacity on port 995.

The attacks: (1) a slow-loris holds session slots without ever logging in (one byte every few
seconds kept a connection for 690 s behind the >= 600 s idle timeout); (2) one IPv6 host takes
every per-source slot by using a new address of its /64 for each connection; (3) on the
implicit-TLS port a plaintext over-capacity ``-ERR`` reaches the client's TLS stack as garbage.

The login deadline as session logic (a dripping or silent client, a stalled upstream login, a
normal login outliving it) is tested on a virtual clock in test_session_deadline.py.  What
stays here needs real sockets: the deadline across STLS and implicit-TLS handshakes (real TLS
over TCP, the client's wall-clock view of the close), the per-source caps (the server's
accept path and PROXY protocol headers over TCP), and over-capacity refusals (the listener).
"""

from __future__ import annotations

import ipaddress
import poplib
import socket
import ssl
import struct
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from popproxy.policy import Lockout, Policy
from popproxy.policy.decisions import parse_address
from popproxy.policy.lockout import source_network
from popproxy.proxy.demo_upstream import DemoUpstream
from tests.faults.support import Observed
from tests.helpers import LoopThread, RunningProxy, make_config, running_proxy
from tests.integration.rawpop import wait_for

LOGIN_TIMEOUT = 1.0
DRIP = 0.2  # seconds between the slow client's bytes
# The deadline is checked by the event loop, the client notices the close within one recv:
# allow this much over LOGIN_TIMEOUT on a loaded CI machine.
SLACK = 0.6
TOO_SLOW = b"-ERR [SYS/TEMP] login took too long, closing\r\n"
OVER_CAPACITY = b"-ERR [SYS/TEMP] too many connections, try again later\r\n"
GREETING = b"+OK POP3 proxy ready\r\n"
V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"


def _plain(**extra: Any) -> dict[str, Any]:
    return {"name": "pop3", "host": "127.0.0.1", "port": 1, "mode": "plain",
            "allow_plaintext_login": True, **extra}


@contextmanager
def _proxy(loop: LoopThread, demo: DemoUpstream, observed: Observed | None = None,
           **overrides: Any) -> Iterator[RunningProxy]:
    overrides.setdefault("listeners", [_plain()])
    limits = {"login_timeout": LOGIN_TIMEOUT, "max_login_failures": 50,
              **overrides.pop("limits", {})}
    config = make_config(demo.port, limits=limits, **overrides)
    with running_proxy(config, loop, None if observed is None else observed.observer) as proxy:
        yield proxy


def _no_verify() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # the proxy's self-signed certificate (state_dir)
    return ctx


def _drip(sock: socket.socket, chunks: list[bytes], started: float,
          limit: float = 5.0) -> tuple[bytes, float]:
    """Send ``chunks`` one every DRIP seconds (cycling) until the proxy closes the connection.

    Returns what was received meanwhile and when the close was seen (seconds since
    ``started``).  Fails if the proxy is still connected after ``limit`` seconds.
    """
    received = b""
    index, next_send = 0, time.monotonic()
    while (now := time.monotonic()) - started < limit:
        try:
            if now >= next_send:
                sock.sendall(chunks[index % len(chunks)])
                index, next_send = index + 1, next_send + DRIP
            sock.settimeout(max(next_send - time.monotonic(), 0.001))
            data = sock.recv(4096)
        except TimeoutError:
            continue
        except (ConnectionError, ssl.SSLEOFError, ssl.SSLZeroReturnError):
            return received, time.monotonic() - started
        if not data:
            return received, time.monotonic() - started
        received += data
    pytest.fail(f"still connected after {limit} s; received {received!r}")


def _assert_cut_at_deadline(elapsed: float) -> None:
    assert LOGIN_TIMEOUT - 0.05 <= elapsed <= LOGIN_TIMEOUT + SLACK, elapsed


def _connect(port: int) -> tuple[socket.socket, float]:
    started = time.monotonic()
    return socket.create_connection(("127.0.0.1", port), timeout=5), started


# --------------------------------------------------------------------------- login deadline
def test_login_timeout_counts_from_accept_across_stls(
    loop_thread: LoopThread, demo_upstream: DemoUpstream, tmp_path: Path
) -> None:
    """STLS and the handshake do not restart the clock; the -ERR comes inside TLS."""
    listeners = [{"name": "pop3", "host": "127.0.0.1", "port": 1, "mode": "starttls"}]
    with _proxy(loop_thread, demo_upstream, listeners=listeners,
                state_dir=str(tmp_path)) as proxy:
        sock, started = _connect(proxy.port)
        with sock:
            file = sock.makefile("rb")
            assert file.readline() == GREETING
            sock.sendall(b"STLS\r\n")
            assert file.readline().startswith(b"+OK")
            with _no_verify().wrap_socket(sock, server_hostname="localhost") as tls:
                received, elapsed = _drip(tls, [b"U"], started)
    _assert_cut_at_deadline(elapsed)
    assert received == TOO_SLOW


def _tls_listener(**extra: Any) -> dict[str, Any]:
    return {"listeners": [{"name": "pop3s", "host": "127.0.0.1", "port": 1, "mode": "tls"}],
            "tls": {"handshake_timeout": 30}, **extra}


def test_login_timeout_after_implicit_tls_handshake_answers_inside_tls(
    loop_thread: LoopThread, demo_upstream: DemoUpstream, tmp_path: Path
) -> None:
    with _proxy(loop_thread, demo_upstream, **_tls_listener(state_dir=str(tmp_path))) as proxy:
        sock, started = _connect(proxy.port)
        with _no_verify().wrap_socket(sock, server_hostname="localhost") as tls:
            received, elapsed = _drip(tls, [b"C", b"A", b"P"], started)
    _assert_cut_at_deadline(elapsed)
    assert received == GREETING + TOO_SLOW


def _client_hello() -> bytes:
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    client = _no_verify().wrap_bio(incoming, outgoing, server_hostname="localhost")
    with pytest.raises(ssl.SSLWantReadError):
        client.do_handshake()
    return outgoing.read()


def test_slow_tls_handshake_is_cut_at_the_login_deadline_without_plaintext(
    loop_thread: LoopThread, demo_upstream: DemoUpstream, tmp_path: Path
) -> None:
    """A ClientHello dripped a byte at a time: handshake_timeout (30 s here) is not the bound;
    the close carries no bytes (a plaintext -ERR would be garbage mid-handshake)."""
    hello = _client_hello()
    observed = Observed.new()
    with _proxy(loop_thread, demo_upstream, observed,
                **_tls_listener(state_dir=str(tmp_path))) as proxy:
        sock, started = _connect(proxy.port)
        with sock:
            received, elapsed = _drip(sock, [hello[i:i + 1] for i in range(len(hello))], started)
        wait_for(lambda: proxy.server.session_count == 0, 5, "the session to end")
    _assert_cut_at_deadline(elapsed)
    assert received == b""
    assert observed.sample("popproxy_tls_handshakes_total", kind="implicit", version="none",
                           result="timeout") == 1
    assert observed.sample("popproxy_logins_total", result="timeout") == 1


def test_login_timeout_is_configurable_and_validated() -> None:
    listeners = [_plain()]
    assert Policy.model_validate({"listeners": listeners}).limits.login_timeout == 60
    for bad in (0, -1, 3601):
        with pytest.raises(ValidationError, match="login_timeout"):
            Policy.model_validate({"listeners": listeners, "limits": {"login_timeout": bad}})
    # A deadline no longer than the failure delay would cut every failed login's answer.
    with pytest.raises(ValidationError, match="longer than auth_failure_delay"):
        Policy.model_validate({"listeners": listeners,
                               "limits": {"login_timeout": 2, "auth_failure_delay": 2}})


# --------------------------------------------------------------------------- per-/64 caps
def test_session_cap_counts_an_ipv6_slash64_as_one_source() -> None:
    settings = Lockout()  # the lockout counters' grouping: IPv4 /32, IPv6 /64
    same = {source_network(ipaddress.ip_address(a), settings) for a in (
        "2001:db8:1:2::1", "2001:db8:1:2::2", "2001:db8:1:2:ffff:ffff:ffff:ffff",
        "2001:db8:1:2:1234:5678:9abc:def0")}
    assert same == {"2001:db8:1:2::/64"}
    assert source_network(ipaddress.ip_address("2001:db8:1:3::1"), settings) != same.pop()
    mapped = ipaddress.ip_address("::ffff:192.0.2.7")
    assert source_network(mapped, settings) == source_network(
        ipaddress.ip_address("192.0.2.7"), settings) == "192.0.2.7/32"
    assert source_network(ipaddress.ip_address("192.0.2.8"), settings) == "192.0.2.8/32"


def _v2_tcp6(source: str) -> bytes:
    body = (ipaddress.IPv6Address(source).packed + ipaddress.IPv6Address("::1").packed
            + struct.pack("!HH", 40000, 110))
    return V2_SIGNATURE + bytes([0x21, 0x21]) + struct.pack("!H", len(body)) + body


def _v1_tcp4(source: str) -> bytes:
    return f"PROXY TCP4 {source} 127.0.0.1 40000 110\r\n".encode()


def _open_behind_balancer(stack: ExitStack, port: int, header: bytes) -> bytes:
    sock = stack.enter_context(socket.create_connection(("127.0.0.1", port), timeout=5))
    sock.sendall(header)
    return sock.makefile("rb").readline()


@pytest.mark.parametrize(("crowd", "neighbour"), [
    pytest.param(["2001:db8:1:2::1", "2001:db8:1:2::2", "2001:db8:1:2:ffff::3"],
                 "2001:db8:1:3::1", id="ipv6-one-slash64"),
    pytest.param(["::ffff:192.0.2.7", "192.0.2.7", "::ffff:192.0.2.7"],
                 "192.0.2.8", id="ipv4-mapped-and-plain"),
])
def test_one_ipv6_slash64_cannot_take_every_session_slot(
    crowd: list[str], neighbour: str, loop_thread: LoopThread, demo_upstream: DemoUpstream
) -> None:
    """Behind a PROXY-protocol balancer, sources of one /64 (or one IPv4 address in both
    spellings) share ``max_sessions_per_ip``; the next /64 still gets in."""
    observed = Observed.new()
    listener = _plain(proxy_protocol={"trusted": ["127.0.0.1/32"]})

    def header(address: str) -> bytes:
        ip = ipaddress.ip_address(address)
        return _v1_tcp4(address) if ip.version == 4 else _v2_tcp6(address)

    with _proxy(loop_thread, demo_upstream, observed, listeners=[listener],
                limits={"max_sessions_per_ip": 2, "login_timeout": 30}) as proxy:
        with ExitStack() as stack:
            first, second, third = (_open_behind_balancer(stack, proxy.port, header(a))
                                    for a in crowd)
            assert (first, second, third) == (GREETING, GREETING, OVER_CAPACITY)
            assert _open_behind_balancer(stack, proxy.port, header(neighbour)) == GREETING
        wait_for(lambda: proxy.server.session_count == 0, 5, "sessions to end")
        with ExitStack() as stack:  # the slots are given back
            assert _open_behind_balancer(stack, proxy.port, header(crowd[2])) == GREETING
    refused = observed.events("connect", result="over_capacity")
    assert [parse_address(e["client"]) for e in refused] == [parse_address(crowd[2])]


# --------------------------------------------------------------------------- port 995 refusal
def _recv_or_reset(sock: socket.socket) -> bytes:
    try:
        return sock.recv(100)
    except ConnectionResetError:
        return b""


def test_over_capacity_on_implicit_tls_port_is_a_clean_close_not_plaintext(
    loop_thread: LoopThread, demo_upstream: DemoUpstream, tmp_path: Path
) -> None:
    observed = Observed.new()
    settings = _tls_listener(state_dir=str(tmp_path), limits={"max_sessions_per_ip": 1,
                                                              "login_timeout": 30})
    with _proxy(loop_thread, demo_upstream, observed, **settings) as proxy:
        holder = poplib.POP3_SSL("127.0.0.1", proxy.port, timeout=5, context=_no_verify())
        try:
            assert holder.getwelcome() == GREETING.rstrip()
            # A real TLS client: a dropped connection, not a TLS protocol error.
            # (Debian's Python 3.11.2 reports that EOF as SSLZeroReturnError.)
            with pytest.raises((ssl.SSLEOFError, ssl.SSLZeroReturnError, ConnectionResetError,
                                ConnectionAbortedError, BrokenPipeError)):
                poplib.POP3_SSL("127.0.0.1", proxy.port, timeout=5, context=_no_verify())
            # Byte for byte: nothing at all is sent (the plaintext -ERR was the garbage).
            sock, _ = _connect(proxy.port)
            with sock:
                assert _recv_or_reset(sock) == b""
        finally:
            holder.quit()
    assert observed.sample("popproxy_connections_total", listener="pop3s",
                           result="over_capacity") == 2


def test_over_capacity_on_starttls_port_still_says_why(
    loop_thread: LoopThread, demo_upstream: DemoUpstream, tmp_path: Path
) -> None:
    listeners = [{"name": "pop3", "host": "127.0.0.1", "port": 1, "mode": "starttls"}]
    with _proxy(loop_thread, demo_upstream, listeners=listeners, state_dir=str(tmp_path),
                limits={"max_sessions_per_ip": 1, "login_timeout": 30}) as proxy, \
            ExitStack() as stack:
        first = stack.enter_context(socket.create_connection(("127.0.0.1", proxy.port), 5))
        assert first.makefile("rb").readline() == GREETING
        second = stack.enter_context(socket.create_connection(("127.0.0.1", proxy.port), 5))
        assert second.makefile("rb").read() == OVER_CAPACITY
