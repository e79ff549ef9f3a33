"""The POP3 core's error family (``pop3/errors.py``): every failure says whose fault it is.

Like h11, the base class cannot be raised by accident: a parser raises Local (our caller broke
the protocol) or Remote (the peer did), and the session can catch ``ProtocolError`` for both.
"""

from __future__ import annotations

import pytest

from popproxy.pop3.errors import LocalProtocolError, ProtocolError, RemoteProtocolError


def test_the_base_class_cannot_be_raised_directly() -> None:
    with pytest.raises(TypeError, match="LocalProtocolError or RemoteProtocolError"):
        ProtocolError("whose fault?")


@pytest.mark.parametrize("kind", [LocalProtocolError, RemoteProtocolError])
def test_both_sides_are_protocol_errors_with_their_message(kind: type[ProtocolError]) -> None:
    with pytest.raises(ProtocolError) as info:
        raise kind("status line over 512 octets")
    assert type(info.value) is kind
    assert str(info.value) == "status line over 512 octets"


def test_local_and_remote_are_distinct() -> None:
    assert not issubclass(LocalProtocolError, RemoteProtocolError)
    assert not issubclass(RemoteProtocolError, LocalProtocolError)
