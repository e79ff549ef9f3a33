"""Named regression tests for the AUTH exchange in the session."""

from __future__ import annotations

import socket

from tests.helpers import LoopThread, make_config, running_demo, running_proxy


def test_overlong_sasl_line_ends_the_auth_exchange() -> None:
    """Regression: a too-long SASL response must not leave the parser in SASL mode."""
    loop = LoopThread()
    try:
        with (
            running_demo(loop) as demo,
            running_proxy(make_config(demo.port), loop) as proxy,
            socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as sock,
        ):
            reader = sock.makefile("rb")
            assert reader.readline().startswith(b"+OK")
            sock.sendall(b"AUTH PLAIN\r\n")
            assert reader.readline().startswith(b"+ ")
            sock.sendall(b"A" * 9000 + b"\r\n")
            assert reader.readline().startswith(b"-ERR")
            sock.sendall(b"USER demo\r\n")
            assert reader.readline().startswith(b"+OK")
            sock.sendall(b"PASS demo\r\n")
            assert reader.readline().startswith(b"+OK")
    finally:
        loop.close()
