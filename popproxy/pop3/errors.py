"""The POP3 core's error family: nothing else may escape a parser (any other exception is a bug)."""


class ProtocolError(Exception):
    """Base class: a peer broke RFC 1939 framing in a way we cannot recover from."""

    def __init__(self, message: str) -> None:
        if type(self) is ProtocolError:
            raise TypeError("raise LocalProtocolError or RemoteProtocolError, not ProtocolError")
        super().__init__(message)


class LocalProtocolError(ProtocolError):
    """We were asked to do something the protocol forbids (a bug in the caller)."""


class RemoteProtocolError(ProtocolError):
    """The peer sent something that cannot be framed (for example an over-long status line)."""
