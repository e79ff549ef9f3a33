"""Both channel classes are what the session takes as its client (``ClientChannel``)."""

from __future__ import annotations

import inspect
import socket

import pytest

from popproxy.proxy.channel import Channel
from popproxy.proxy.client_channel import ClientChannel
from popproxy.proxy.socket_channel import SocketChannel


def _members() -> list[str]:
    names = set(dir(ClientChannel)) | set(ClientChannel.__annotations__)
    return sorted(name for name in names if not name.startswith("_"))


@pytest.mark.parametrize("cls", [Channel, SocketChannel])
def test_every_protocol_member_is_there(cls: type[Channel] | type[SocketChannel]) -> None:
    members = _members()
    assert {"read", "write", "switch_to_tls", "start_implicit_tls", "proxy_header"} <= set(
        members)
    for name in members:
        if name == "proxy_header":  # an instance attribute
            assert name in cls.__slots__
            continue
        expected = inspect.getattr_static(ClientChannel, name)
        actual = inspect.getattr_static(cls, name)
        assert isinstance(actual, property) == isinstance(expected, property), name
        assert inspect.iscoroutinefunction(actual) == inspect.iscoroutinefunction(expected), name


def _both_are_client_channels() -> list[ClientChannel]:
    """Never called: ``mypy --strict tests`` checks that both classes fit the protocol."""
    return [Channel(), SocketChannel(socket.socket())]
