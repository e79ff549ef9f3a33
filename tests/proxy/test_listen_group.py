"""The workers' listening groups: a dead worker's socket leaves, its replacement rejoins."""

from __future__ import annotations

import socket
from pathlib import Path

from popproxy.proxy.listen_group import bind_listeners, leave, rejoin
from tests.helpers import make_config


def _greeted_by(group: list[socket.socket], port: int, count: int) -> set[int]:
    """Which members of ``group`` the kernel handed ``count`` new connections to."""
    clients = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(count)]
    got: set[int] = set()
    for index, sock in enumerate(group):
        if sock.fileno() == -1:
            continue
        sock.setblocking(False)
        while True:
            try:
                accepted, _ = sock.accept()
            except BlockingIOError:
                break
            accepted.close()
            got.add(index)
    for client in clients:
        client.close()
    return got


def test_a_dead_workers_socket_leaves_and_new_connections_reach_the_others(
        tmp_path: Path) -> None:
    """Review: a dead worker's socket stayed in the group, and the kernel kept handing it new
    connections that nobody accepted until a replacement started (never, in a crash loop)."""
    config = make_config(1, state_dir=str(tmp_path))
    group = bind_listeners(config, 2)["pop3"]
    port = group[0].getsockname()[1]
    try:
        leave(group, 0)
        assert _greeted_by(group, port, 40) == {1}  # all 40, none queued for the dead one
        rejoin(group, 0, 64)
        assert group[0].fileno() != -1 and group[0].getsockname()[1] == port
        assert _greeted_by(group, port, 40) == {0, 1}  # the replacement gets its share again
        fd = group[1].fileno()
        rejoin(group, 1, 64)  # a live member is left as it is
        assert group[1].fileno() == fd
    finally:
        for sock in group:
            sock.close()


def test_the_last_open_socket_of_a_group_stays(tmp_path: Path) -> None:
    """Every worker dead at once: the port stays ours and its queue waits for a replacement."""
    config = make_config(1, state_dir=str(tmp_path))
    group = bind_listeners(config, 2)["pop3"]
    try:
        leave(group, 0)
        leave(group, 1)
        assert group[0].fileno() == -1 and group[1].fileno() != -1
        rejoin(group, 0, 64)
        assert group[0].fileno() != -1
    finally:
        for sock in group:
            sock.close()
