"""Resource limits under hostile clients: slow-loris, half-open floods, stalled TLS handshakes.

``limits.idle_timeout`` has a schema minimum of 600 s (RFC 1939 section 3), so the tests build a
valid config and then lower it with ``model_copy`` (no validation) to keep them fast.
"""

from __future__ import annotations

import contextlib
import poplib
import selectors
import socket
import ssl
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from pathlib import Path

import pytest

from popproxy.policy import Policy
from popproxy.proxy.demo_upstream import DemoUpstream
from tests.faults.support import Observed, demo_session
from tests.helpers import LoopThread, RunningProxy, make_config, running_proxy
from tests.integration.rawpop import RawPOP3, wait_for

IDLE = 0.5  # seconds, for the slow-loris test
HANDSHAKE = 0.5  # tls.handshake_timeout for the stalled-handshake test
OVER_CAPACITY = b"-ERR [SYS/TEMP] too many connections, try again later\r\n"
AUTOLOGOUT = b"-ERR [SYS/TEMP] autologout: idle for too long\r\n"


def with_idle_timeout(config: Policy, seconds: float) -> Policy:
    """``config`` with an idle timeout below the schema's 600 s minimum (tests only)."""
    limits = config.limits.model_copy(update={"idle_timeout": seconds})
    return config.model_copy(update={"limits": limits})


def read_until_eof(socks: list[socket.socket], timeout: float
                   ) -> dict[socket.socket, tuple[bytes, float | None]]:
    """Read every socket until the peer closes it: (bytes, monotonic time of the close or None
    if still open after ``timeout``)."""
    result: dict[socket.socket, tuple[bytes, float | None]] = {s: (b"", None) for s in socks}
    with selectors.DefaultSelector() as sel:
        for s in socks:
            s.setblocking(False)
            sel.register(s, selectors.EVENT_READ)
        deadline = time.monotonic() + timeout
        while sel.get_map() and time.monotonic() < deadline:
            for key, _ in sel.select(max(0.0, deadline - time.monotonic())):
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                try:
                    data = sock.recv(65536)
                except (BlockingIOError, InterruptedError):
                    continue
                except ConnectionError:
                    data = b""
                got, _ = result[sock]
                if data:
                    result[sock] = (got + data, None)
                else:
                    result[sock] = (got, time.monotonic())
                    sel.unregister(sock)
    return result


@contextmanager
def sockets(count: int, port: int, source: str = "127.0.0.1") -> Iterator[list[socket.socket]]:
    with ExitStack() as stack:
        socks = [stack.enter_context(socket.create_connection(("127.0.0.1", port), 10,
                                                               source_address=(source, 0)))
                 for _ in range(count)]
        yield socks


# --------------------------------------------------------------------------- slow-loris
def test_slow_loris_closed_by_idle_timeout_without_starving_others(
    demo_upstream: DemoUpstream, loop_thread: LoopThread
) -> None:
    """50 clients sending a byte per second (slower than the 0.5 s idle timer) are logged
    out, while 20 ordinary sessions run at full speed next to them."""
    observed = Observed.new()
    config = with_idle_timeout(
        make_config(demo_upstream.port, limits={"max_sessions_per_ip": 200}), IDLE)
    with running_proxy(config, loop_thread, observed.observer) as proxy, \
            sockets(50, proxy.port) as slow, ThreadPoolExecutor(4) as pool:
        started = time.monotonic()
        normal = [pool.submit(demo_session, proxy.port) for _ in range(20)]
        for s in slow:  # the first byte of "USER ..." at once
            s.sendall(b"U")
        durations = [f.result(10) for f in normal]
        for s in slow:  # one more byte a second later: the idle timer has fired by then
            time.sleep(1.0 / len(slow))
            with contextlib.suppress(OSError):  # already closed by the proxy: the point
                s.sendall(b"S")
        closed = read_until_eof(slow, timeout=5)
        assert max(durations) < 1.0, durations
        for data, closed_at in closed.values():
            assert data == b"+OK POP3 proxy ready\r\n" + AUTOLOGOUT
            assert closed_at is not None and closed_at - started < IDLE + 2.5
        wait_for(lambda: proxy.server.session_count == 0, what="sessions to end")
        assert observed.sample("popproxy_session_duration_seconds_count", listener="pop3") == 70
        assert observed.sample("popproxy_active_sessions", listener="pop3") == 0
        assert len(observed.events("connect", result="accepted")) == 70
        assert demo_session(proxy.port) < 1.0


# --------------------------------------------------------------------------- half-open flood
def test_half_open_flood_hits_the_per_ip_cap_other_sources_still_served(
    demo_upstream: DemoUpstream, loop_thread: LoopThread
) -> None:
    observed = Observed.new()
    cap, flood = 10, 200
    config = make_config(demo_upstream.port, limits={"max_sessions_per_ip": cap})
    with running_proxy(config, loop_thread, observed.observer) as proxy:
        with sockets(flood, proxy.port) as socks:
            wait_for(lambda: observed.total("popproxy_connections_total") == flood, 10,
                     "every connection to be decided")
            answers = read_until_eof(socks, timeout=0.5)
            admitted = [d for d, closed in answers.values() if closed is None]
            refused = [d for d, closed in answers.values() if closed is not None]
            assert admitted == [b"+OK POP3 proxy ready\r\n"] * cap
            assert refused == [OVER_CAPACITY] * (flood - cap)
            assert proxy.server.session_count == cap
            # Another source address is not affected by 127.0.0.1's cap.
            assert demo_session(proxy.port, source="127.0.0.2") < 1.0
            with RawPOP3(proxy.port, read_greeting=False) as extra:  # still refused here
                assert extra.read_until_eof() == OVER_CAPACITY
        wait_for(lambda: proxy.server.session_count == 0, what="the flood's sessions to end")
        assert demo_session(proxy.port) < 1.0  # slots are given back
    sample = observed.sample
    assert sample("popproxy_connections_total", listener="pop3",
                  result="over_capacity") == flood - cap + 1
    assert sample("popproxy_connections_total", listener="pop3", result="accepted") == cap + 2
    refusals = observed.events("connect", result="over_capacity")
    assert len(refusals) == flood - cap + 1 and {r["client"] for r in refusals} == {"127.0.0.1"}


# --------------------------------------------------------------------------- TLS handshakes
def _partial_client_hello() -> bytes:
    ctx = ssl.create_default_context()
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(incoming, outgoing, server_hostname="localhost")
    with pytest.raises(ssl.SSLWantReadError):
        obj.do_handshake()
    hello = outgoing.read()
    return hello[: len(hello) // 2]


def _tls_config(demo_port: int, state: Path) -> Policy:
    return make_config(
        demo_port,
        listeners=[{"name": "tls", "port": 1, "mode": "tls"},
                   {"name": "stls", "port": 2, "mode": "starttls"}],
        tls={"handshake_timeout": HANDSHAKE},
        limits={"max_sessions_per_ip": 500},
        state_dir=str(state),
    )


def _tls_session(proxy: RunningProxy, state: Path) -> float:
    started = time.monotonic()
    ctx = ssl.create_default_context(cafile=str(state / "selfsigned.crt"))
    client = poplib.POP3_SSL("127.0.0.1", proxy.server.ports["tls"], context=ctx, timeout=10)
    try:
        client.user("demo")
        client.pass_("demo")
        assert client.stat()[0] == 3
        client.quit()
    finally:
        client.close()
    return time.monotonic() - started


def test_stalled_tls_handshakes_are_dropped(demo_upstream: DemoUpstream, loop_thread: LoopThread,
                                            tmp_path: Path) -> None:
    """Silent clients, half a ClientHello, and STLS followed by silence: all dropped after
    tls.handshake_timeout, while a real TLS client is served next to them."""
    observed = Observed.new()
    config = _tls_config(demo_upstream.port, tmp_path)
    with running_proxy(config, loop_thread, observed.observer) as proxy:
        tls_port, stls_port = proxy.server.ports["tls"], proxy.server.ports["stls"]
        with sockets(30, tls_port) as silent, sockets(20, tls_port) as partial, \
                sockets(10, stls_port) as stls:
            started = time.monotonic()
            hello = _partial_client_hello()
            for s in partial:
                s.sendall(hello)
            for s in stls:
                s.sendall(b"STLS\r\n")
            assert _tls_session(proxy, tmp_path) < HANDSHAKE  # not starved
            answers = read_until_eof([*silent, *partial, *stls], timeout=HANDSHAKE + 3)
            for sock, (data, closed_at) in answers.items():
                assert closed_at is not None, "a stalled handshake was not dropped"
                assert closed_at - started < HANDSHAKE + 2
                if sock in stls:
                    assert data == b"+OK POP3 proxy ready\r\n+OK begin TLS negotiation\r\n"
                else:
                    assert b"+OK" not in data  # nothing in clear on the implicit TLS port
        wait_for(lambda: proxy.server.session_count == 0, what="sessions to end")
        assert _tls_session(proxy, tmp_path) < 1.0
    sample = observed.sample
    assert sample("popproxy_tls_handshakes_total", kind="implicit", version="none",
                  result="timeout") == 50
    assert sample("popproxy_tls_handshakes_total", kind="stls", version="none",
                  result="timeout") == 10
    timeouts = observed.events("tls", result="timeout")
    assert len(timeouts) == 60 and {e["error"] for e in timeouts} == {"TimeoutError"}


# --------------------------------------------------------------------------- not reading
def test_client_pipelining_without_reading_is_logged_out(
    demo_upstream: DemoUpstream, loop_thread: LoopThread
) -> None:
    """Without logging in, a client pipelines CAPA and never reads the answers: the proxy
    stops buffering replies and logs it out after the idle timeout (no slot held forever)."""
    config = with_idle_timeout(make_config(demo_upstream.port), IDLE)
    with running_proxy(config, loop_thread) as proxy, \
            socket.create_connection(("127.0.0.1", proxy.port)) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setblocking(False)
        # Send until the proxy stops taking input for a while (its replies pile up unread, so
        # it stopped reading) or drops the connection.
        flood, sent, last_progress = b"CAPA\r\n" * 100_000, 0, time.monotonic()
        deadline = last_progress + 15
        while time.monotonic() - last_progress < 0.5 and time.monotonic() < deadline:
            try:
                sent += sock.send(flood[sent % len(flood):])
                last_progress = time.monotonic()
            except BlockingIOError:
                time.sleep(0.01)
            except OSError:  # reset by the proxy: logged out while we were still sending
                break
        assert sent > 1_000_000
        wait_for(lambda: proxy.server.session_count == 0, IDLE + 1.5, "the session to be dropped")
