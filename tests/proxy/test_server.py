"""``ProxyServer``: listeners, the accept-time decisions (policy, capacity), policy and TLS
reloads, and a graceful stop.

Reloads (SIGHUP): a changed ``scan`` section gives new sessions a new scan service and closes
the old one (threads, Redis pool) only after the sessions that still use it have ended; a scan
section that cannot be built, or changed listeners, are refused without touching anything.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from popproxy.policy import Policy
from popproxy.proxy import server as server_module
from popproxy.proxy.client_channel import ClientChannel
from popproxy.proxy.demo_upstream import DemoUpstream, Mailbox
from popproxy.proxy.listen_group import bind_listeners
from popproxy.proxy.observe import Observer
from popproxy.proxy.resting import rest_all_now
from popproxy.proxy.scanning import ScanService
from popproxy.proxy.server import ProxyServer
from popproxy.proxy.session import Session, SessionSettings
from tests.faults.support import Observed
from tests.helpers import LoopThread, make_config, running_demo, running_proxy
from tests.integration.rawpop import RawPOP3, wait_for
from tests.support.ports import accept_queue_sizes, free_port, queued_connections

CLEAN = b"From: a@example.test\r\nSubject: hello\r\n\r\nJust text.\r\n"


def _closed(service: ScanService) -> bool:
    return service.closed  # its worker processes are stopped


def test_old_scan_service_is_closed_after_its_sessions_end(loop_thread: LoopThread,
                                                           tmp_path: Path) -> None:
    demo = DemoUpstream({b"u": Mailbox(b"p", [CLEAN])})
    with running_demo(loop_thread, demo):
        config = make_config(demo.port, scan={"enabled": True}, state_dir=str(tmp_path))
        with running_proxy(config, loop_thread) as proxy, RawPOP3(proxy.port) as old_client:
            old_client.login("u", "p")
            old = proxy.server.scan
            assert old is not None
            changed = make_config(demo.port, scan={"enabled": True, "time_budget": 9},
                                  state_dir=str(tmp_path))

            async def reload() -> bool:
                return proxy.server.reload_policy(changed)

            assert loop_thread.call(reload())
            assert proxy.server.scan is not old and proxy.server.scan is not None
            assert not _closed(old)  # the session that started before the reload still uses it
            assert old_client.command("RETR 1").endswith(b"Just text.\r\n.\r\n")
            assert old_client.command("QUIT").startswith(b"+OK")
            wait_for(lambda: _closed(old), what="the replaced scan service to be closed")
            assert not _closed(proxy.server.scan)


def test_scan_section_that_cannot_be_built_is_refused(loop_thread: LoopThread,
                                                      tmp_path: Path) -> None:
    config = make_config(1, scan={"enabled": True}, state_dir=str(tmp_path))
    bad = make_config(1, scan={"enabled": True, "redis_url": "redis://localhost:notaport"},
                      state_dir=str(tmp_path))
    with running_proxy(config, loop_thread) as proxy:
        before = proxy.server.scan

        async def reload() -> bool:
            return proxy.server.reload_policy(bad)

        assert not loop_thread.call(reload())
        assert proxy.server.scan is before and proxy.server.config is config
        assert before is not None and not _closed(before)


# ------------------------------------------------------------------ listeners and accept
def _connections(observer: Observer, result: str) -> float:
    value = observer.metrics.registry.get_sample_value(
        "popproxy_connections_total", {"listener": "pop3", "result": result})
    return value or 0.0


def _refused_at_once(port: int) -> bytes:
    """What a client reads before the proxy closes: b"" if it said nothing."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        data = b""
        while chunk := sock.recv(4096):
            data += chunk
        return data


def test_start_binds_every_listener_and_stop_closes_them(loop_thread: LoopThread,
                                                         tmp_path: Path) -> None:
    config = make_config(1, state_dir=str(tmp_path))
    server = ProxyServer(config)
    loop_thread.call(server.start({"pop3": 0}))
    port = server.ports["pop3"]
    with RawPOP3(port) as client:
        assert client.greeting.startswith(b"+OK")
    loop_thread.call(server.stop(grace=0))
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()


def test_denied_network_is_closed_without_a_word(loop_thread: LoopThread,
                                                 tmp_path: Path) -> None:
    listener = {"name": "pop3", "host": "127.0.0.1", "port": 1, "mode": "plain",
                "allow_plaintext_login": True, "deny": ["127.0.0.0/8"]}
    observer = Observer()
    config = make_config(1, listeners=[listener], state_dir=str(tmp_path))
    with running_proxy(config, loop_thread, observer) as proxy:
        assert _refused_at_once(proxy.port) == b""
        wait_for(lambda: _connections(observer, "denied") == 1, what="the denial to count")
        assert proxy.server.session_count == 0


def test_over_capacity_says_why_on_a_plain_listener(demo_upstream: DemoUpstream,
                                                    loop_thread: LoopThread) -> None:
    observer = Observer()
    config = make_config(demo_upstream.port, limits={"max_sessions": 1})
    with running_proxy(config, loop_thread, observer) as proxy, RawPOP3(proxy.port) as first:
        first.login("demo", "demo")
        assert proxy.server.session_count == 1
        refusal = _refused_at_once(proxy.port)
        assert refusal == b"-ERR [SYS/TEMP] too many connections, try again later\r\n"
        assert _connections(observer, "over_capacity") == 1


# ------------------------------------------------------------------ the accept queue
BURST = 1000  # the soak's clients, all connecting at once (tests/soak/test_soak.py)


def _loops() -> list[Any]:
    """asyncio's loop, and uvloop's where it imports (the [test] extra has it)."""
    loops = [pytest.param(asyncio.new_event_loop, id="asyncio")]
    try:
        import uvloop
    except ImportError:
        return loops
    return [*loops, pytest.param(uvloop.new_event_loop, id="uvloop")]


@pytest.mark.parametrize("new_loop", _loops())
@pytest.mark.parametrize("shared_socket", [False, True], ids=["own-socket", "worker"])
def test_a_burst_of_clients_waits_in_the_accept_queue_while_the_loop_is_busy(
        new_loop: Callable[[], asyncio.AbstractEventLoop], shared_socket: bool,
        tmp_path: Path) -> None:
    """Regression (issue 18 item 4): ``create_server``'s default backlog of 100 dropped the
    SYNs of the soak's 1,000 clients while the loop was busy with TLS handshakes; they waited
    for retransmissions, and hundreds of handshakes took over 60 s on uvloop.  The worker path
    matters too: ``create_server(sock=...)`` calls ``listen()`` again with its own backlog."""
    listener = {"name": "pop3", "host": "127.0.0.1", "port": free_port(), "mode": "plain",
                "allow_plaintext_login": True}
    config = make_config(1, listeners=[listener], state_dir=str(tmp_path))
    loop_thread = LoopThread(new_loop())
    server = ProxyServer(config)
    # A worker gets its own socket of the listener's group (docs/scaling.md).
    group = bind_listeners(config)["pop3"] if shared_socket else []
    sockets = {"pop3": group[0]} if group else None
    try:
        loop_thread.call(server.start(sockets=sockets))
        busy = threading.Event()

        def handshakes() -> None:
            # The loop is stuck in a long callback (as in a run of TLS handshakes): only the
            # kernel's accept queue holds the new connections meanwhile.
            busy.set()
            time.sleep(3)

        loop_thread.loop.call_soon_threadsafe(handshakes)
        assert busy.wait(10)
        assert queued_connections(server.ports["pop3"], BURST, within=2) == BURST
        loop_thread.call(server.stop(grace=0))
    finally:
        loop_thread.close()
        for sock in group:
            sock.close()


# ------------------------------------------------------------------ reloads
def _reload(loop_thread: LoopThread, server: ProxyServer, new: Policy) -> bool:
    async def reload() -> bool:
        return server.reload_policy(new)

    return loop_thread.call(reload())


def test_reload_swaps_the_policy_for_new_sessions(loop_thread: LoopThread,
                                                  tmp_path: Path) -> None:
    config = make_config(1, state_dir=str(tmp_path))
    new = make_config(1, state_dir=str(tmp_path), limits={"max_sessions": 7})
    with running_proxy(config, loop_thread) as proxy:
        assert _reload(loop_thread, proxy.server, new)
        assert proxy.server.config is new


def test_sessions_of_a_listener_share_settings_until_a_reload(loop_thread: LoopThread,
                                                              tmp_path: Path) -> None:
    """Built once per listener (not per connection); a reload gives new sessions new ones."""
    config = make_config(1, state_dir=str(tmp_path))
    new = make_config(1, state_dir=str(tmp_path), limits={"max_sessions": 7})
    with running_proxy(config, loop_thread) as proxy:
        cached = proxy.server._listener_settings
        with RawPOP3(proxy.port):
            wait_for(lambda: "pop3" in cached, 5, "the first session")
        first = cached["pop3"]
        with RawPOP3(proxy.port):
            pass
        assert proxy.server._listener_settings["pop3"] is first
        assert first.policy is config
        assert _reload(loop_thread, proxy.server, new)
        with RawPOP3(proxy.port):
            wait_for(lambda: "pop3" in proxy.server._listener_settings, 5, "a new session")
        assert proxy.server._listener_settings["pop3"].policy is new


def test_reload_resizes_the_accept_queue(loop_thread: LoopThread, tmp_path: Path) -> None:
    """Regression: ``limits.listen_backlog`` was read at start only, so a reload that raised it
    for a burst did nothing until a restart.  listen(2) again resizes the queue in place."""
    config = make_config(1, state_dir=str(tmp_path), limits={"listen_backlog": 16})
    new = make_config(1, state_dir=str(tmp_path), limits={"listen_backlog": 64})
    with running_proxy(config, loop_thread) as proxy:
        assert accept_queue_sizes(proxy.port) == [16]
        assert _reload(loop_thread, proxy.server, new)
        assert accept_queue_sizes(proxy.port) == [64]
        with RawPOP3(proxy.port) as client:  # the listener still accepts and serves
            assert client.greeting.startswith(b"+OK")


def test_reload_that_changes_listeners_is_refused(loop_thread: LoopThread,
                                                  tmp_path: Path) -> None:
    config = make_config(1, state_dir=str(tmp_path))
    moved = {"name": "pop3", "host": "127.0.0.1", "port": 2, "mode": "plain",
             "allow_plaintext_login": True}
    observed = Observed.new()
    with running_proxy(config, loop_thread, observed.observer) as proxy:
        assert not _reload(loop_thread, proxy.server,
                           make_config(1, listeners=[moved], state_dir=str(tmp_path)))
        assert proxy.server.config is config
        reason = ("listener names, addresses or modes changed (restart popproxy): "
                  f"pop3: port {config.listeners[0].port} -> 2")
        assert proxy.server.refusal == reason  # what systemd's STATUS= line shows
    assert len(observed.events("config_reload", result="refused", error=reason)) == 1
    assert observed.sample("popproxy_config_reloads_total", kind="policy",
                           result="refused") == 1


def test_reload_that_moves_state_dir_is_refused(loop_thread: LoopThread,
                                                tmp_path: Path) -> None:
    """state_dir holds what the workers of a host share (host file, lockout key): a reload
    cannot move it under live workers."""
    config = make_config(1, state_dir=str(tmp_path / "a"))
    with running_proxy(config, loop_thread) as proxy:
        assert not _reload(loop_thread, proxy.server,
                           make_config(1, state_dir=str(tmp_path / "b")))
        assert proxy.server.config is config
        assert "state_dir changed" in proxy.server.refusal


def test_tls_reload_without_tls_listeners_is_a_no_op(tmp_path: Path) -> None:
    server = ProxyServer(make_config(1, state_dir=str(tmp_path)))
    assert server.server_tls is None
    assert server.reload_tls()


# ------------------------------------------------------------------ stop
def test_stop_cuts_sessions_still_open_after_the_grace(demo_upstream: DemoUpstream,
                                                       loop_thread: LoopThread) -> None:
    server = ProxyServer(make_config(demo_upstream.port))
    loop_thread.call(server.start({"pop3": 0}))
    with RawPOP3(server.ports["pop3"]) as client:
        client.login("demo", "demo")
        assert server.session_count == 1
        loop_thread.call(server.stop(grace=0))
        assert server.session_count == 0
        # Told why (issue 19 item 7), then closed; and no QUIT upstream.
        assert client.read_until_eof() == b"-ERR [SYS/TEMP] server shutting down\r\n"
    wait_for(lambda: demo_upstream.open_connections == 0, what="the upstream to see the close")
    assert b"QUIT" not in demo_upstream.commands_seen


# Regression (review): stop() waited only for sessions.  A connection still waiting for its
# PROXY header when stop() began became a session after stop() had closed the stores (its
# login then failed by the fail mode); now stop() waits for it too, and it is turned away.
PROXY_V1 = b"PROXY TCP4 10.1.2.3 127.0.0.1 40000 110\r\n"


def _proxied_listener(mode: str) -> dict[str, Any]:
    extra = {"allow_plaintext_login": True} if mode == "plain" else {}
    return {"name": "pop3", "host": "127.0.0.1", "port": 1, "mode": mode, **extra,
            "proxy_protocol": {"trusted": ["127.0.0.1/32"], "header_timeout": 30}}


def _stop_while_a_header_is_awaited(mode: str, tmp_path: Path, grace: float,
                                    header: bytes) -> tuple[bytes, Observer]:
    """Connect without the header, begin stop(), then send ``header``; what the client read,
    once stop() returned."""
    observer = Observer()
    loop_thread = LoopThread()
    config = make_config(1, listeners=[_proxied_listener(mode)], state_dir=str(tmp_path),
                         lockout={"enabled": True})
    server = ProxyServer(config, observer)
    try:
        loop_thread.call(server.start({"pop3": 0}))
        with socket.create_connection(("127.0.0.1", server.ports["pop3"]), timeout=10) as sock:
            time.sleep(0.3)  # accepted, and waiting for the header
            stopping = asyncio.run_coroutine_threadsafe(server.stop(grace=grace),
                                                        loop_thread.loop)
            wait_for(lambda: _refused_connect(server.ports["pop3"]), what="stop() to begin")
            assert not stopping.done()  # it waits for the connection, not only for sessions
            if header:
                sock.sendall(header)
            stopping.result(15)
            data = b""
            try:
                while chunk := sock.recv(4096):
                    data += chunk
            except ConnectionResetError:
                pass
    finally:
        loop_thread.close()
    assert server.session_count == 0
    assert _connections(observer, "accepted") == 0
    return data, observer


def _refused_connect(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return True
    return False


def test_a_connection_whose_proxy_header_comes_after_stop_began_gets_no_session(
        tmp_path: Path) -> None:
    data, observer = _stop_while_a_header_is_awaited("starttls", tmp_path, 10, PROXY_V1)
    assert data == b"-ERR [SYS/TEMP] server shutting down\r\n"  # RFC 3206, not a greeting
    assert _connections(observer, "shutting_down") == 1


def test_on_the_implicit_tls_port_it_is_closed_without_a_byte(tmp_path: Path) -> None:
    data, observer = _stop_while_a_header_is_awaited("tls", tmp_path, 10, PROXY_V1)
    assert data == b""  # plaintext would reach the client's TLS stack as a broken record
    assert _connections(observer, "shutting_down") == 1


def test_a_header_that_never_comes_is_cut_at_the_end_of_the_grace(tmp_path: Path) -> None:
    started = time.monotonic()
    data, observer = _stop_while_a_header_is_awaited("plain", tmp_path, 0.5, b"")
    assert data == b"" and time.monotonic() - started < 10  # not the 30 s header timeout
    assert _connections(observer, "shutting_down") == 0


# Regression (review of the above): a connection accepted in the loop step a reload or stop()
# runs in has its settings (and so the stores) from _new_channel, but its task has not run yet:
# it was in neither _sessions nor _connecting, so the reload closed the old lockout store at
# once under it, and stop() returned with it still waiting for its PROXY header.
def _accepted_socket() -> tuple[socket.socket, socket.socket]:
    """(client, server side) of a loopback TCP connection, as the Acceptor hands it over."""
    with socket.create_server(("127.0.0.1", 0)) as listening:
        client = socket.create_connection(listening.getsockname())
        accepted, _ = listening.accept()
    accepted.setblocking(False)
    return client, accepted


def _window_config(tmp_path: Path, window: int, proxied: bool = False) -> Policy:
    listener = _proxied_listener("plain") if proxied else {
        "name": "pop3", "host": "127.0.0.1", "port": 1, "mode": "plain",
        "allow_plaintext_login": True}
    return make_config(1, listeners=[listener], state_dir=str(tmp_path),
                       lockout={"enabled": True, "window": window})


def test_a_connection_accepted_as_a_reload_replaces_the_store_gets_the_new_one(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    started: list[SessionSettings] = []

    class Recorded(Session):
        def __init__(self, channel: ClientChannel, settings: SessionSettings,
                     *args: Any) -> None:
            started.append(settings)
            super().__init__(channel, settings, *args)

    monkeypatch.setattr(server_module, "Session", Recorded)

    async def main() -> None:
        server = ProxyServer(_window_config(tmp_path, 900), Observer())
        old = server.lockout
        assert old is not None
        client, accepted = _accepted_socket()
        server._accepted("pop3", accepted)  # the Acceptor's callback: spawns _serve, not run
        assert server.reload_policy(_window_config(tmp_path, 1200))  # SIGHUP, same step
        await asyncio.sleep(0.2)
        assert server.session_count == 1
        assert [s.lockout for s in started] == [server.lockout] and old is not server.lockout
        await server.stop(grace=0.1)
        client.close()

    asyncio.run(main())


def test_stop_waits_for_a_connection_accepted_in_its_own_loop_step(tmp_path: Path) -> None:
    """Accepted in the loop step stop() begins in: its _serve task has not run yet."""
    async def main() -> None:
        server = ProxyServer(_window_config(tmp_path, 900, proxied=True), Observer())
        client, accepted = _accepted_socket()
        server._accepted("pop3", accepted)
        await server.stop(grace=0.05)  # not wait_for: its own task would let _serve run first
        others = asyncio.all_tasks() - {asyncio.current_task()}
        assert not server._connecting and not others  # nothing left waiting for a header
        client.settimeout(5)
        with contextlib.suppress(ConnectionResetError):  # cut at the end of the grace
            assert client.recv(100) == b""  # no greeting: its header never came
        client.close()

    asyncio.run(main())


def test_an_idle_sessions_upstream_socket_is_not_watched(loop_thread: LoopThread) -> None:
    """Between commands nothing is expected from the upstream: its channel rests (no poll
    handle per idle session, ~0.55 KiB on uvloop) and the next command is still answered."""
    demo = DemoUpstream({b"u": Mailbox(b"p", [CLEAN])})
    with (running_demo(loop_thread, demo),
          running_proxy(make_config(demo.port), loop_thread) as proxy,
          RawPOP3(proxy.port) as client):
        client.login("u", "p")

        async def upstream_watched() -> bool:
            rest_all_now()  # what the loop does REST_AFTER seconds after the last answer
            (task,) = proxy.server._sessions
            frame = task.get_coro().cr_frame  # type: ignore[union-attr]
            upstream = frame.f_locals["session"].upstream
            return bool(upstream._channel._reading)

        assert loop_thread.call(upstream_watched()) is False
        client.send(b"STAT\r\n")
        assert client.read_response(multiline=False).startswith(b"+OK 1 ")
        assert loop_thread.call(upstream_watched()) is False

