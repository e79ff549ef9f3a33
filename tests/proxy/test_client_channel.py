"""``SocketChannel`` is what the session takes as its client (``ClientChannel``): every member
of the protocol is there, a property where the protocol has one, a coroutine where it has one."""

from __future__ import annotations

import inspect
import socket

from popproxy.proxy.client_channel import ClientChannel
from popproxy.proxy.socket_channel import SocketChannel


def _members() -> list[str]:
    names = set(dir(ClientChannel)) | set(ClientChannel.__annotations__)
    return sorted(name for name in names if not name.startswith("_"))


def test_every_protocol_member_is_there() -> None:
    members = _members()
    assert {"read", "write", "switch_to_tls", "start_implicit_tls", "proxy_header"} <= set(
        members)
    for name in members:
        if name in ("proxy_header", "write_paused"):  # instance attributes
            assert name in SocketChannel.__slots__
            continue
        expected = inspect.getattr_static(ClientChannel, name)
        actual = inspect.getattr_static(SocketChannel, name)
        assert isinstance(actual, property) == isinstance(expected, property), name
        assert inspect.iscoroutinefunction(actual) == inspect.iscoroutinefunction(expected), name


def _is_a_client_channel() -> ClientChannel:
    """Never called: ``mypy --strict tests`` checks that the class fits the protocol."""
    return SocketChannel(socket.socket())
