"""TLS on a connected socket's descriptor through the C object inside ``ssl.SSLSocket``,
without the wrapper (issue 18 item 6).

Why: ``SSLContext.wrap_socket`` makes an ``ssl.SSLSocket``, a Python subclass of
``socket.socket`` with an instance dict of eight attributes, as a new socket object on the
same descriptor: about 0.63 KiB of Python objects per TLS connection for as long as it lives
(``bench/idle_objects.py``, CPython 3.11).  Everything a ``SocketChannel`` uses of it
(handshake, read, write, pending, close_notify, ``version``/``cipher`` for metrics and audit)
is the C ``_ssl._SSLSocket``'s, which ``SSLContext._wrap_socket`` returns and ``SSLSocket``
calls.

That is private API, hence:

- ``DIRECT`` is decided once, at import, by a feature check; without it (another Python, a
  CPython that changed them) ``wrap`` uses ``wrap_socket`` and the channel the same methods
  on the ``SSLSocket`` (``close_notify`` covers the one that differs).
- What ``SSLSocket._create`` checks before it calls ``_wrap_socket`` is checked here too, or a
  client context would verify the upstream's chain and not its name: ``check_hostname``
  requires ``server_hostname``, which is IDNA-encoded as there, and only client-side.
- The SNI callback (``tls.build_server_context``) sets ``context`` on the handshake's owner, a
  weak reference, and the C object takes none: the owner is the channel (``TlsOwner``
  forwards ``context``) until the handshake ends, then a shared placeholder.
- A ragged EOF (no close_notify) raises ``SSLEOFError`` here; ``SSLSocket`` returned 0
  (``suppress_ragged_eofs``): the channel reads both as EOF.
"""

from __future__ import annotations

import socket
import ssl
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol, cast

_wrap_socket: Callable[..., Any] | None = getattr(ssl.SSLContext, "_wrap_socket", None)
_encode_hostname: Callable[..., Any] | None = getattr(ssl.SSLContext, "_encode_hostname", None)
_c_ssl_socket: type | None = getattr(getattr(ssl, "_ssl", None), "_SSLSocket", None)
_USED = ("do_handshake", "read", "write", "pending", "shutdown", "version", "cipher", "owner",
         "context")
# Whether the C object is there with what the channel uses (tests turn it off for the
# fallback's sake).
DIRECT = (_wrap_socket is not None and _encode_hostname is not None
          and _c_ssl_socket is not None and all(hasattr(_c_ssl_socket, n) for n in _USED))


class TlsSocket(Protocol):
    """What the channel calls: the C object's methods, which ``ssl.SSLSocket`` has too."""

    context: ssl.SSLContext

    def do_handshake(self) -> None: ...
    def read(self, size: int, buffer: memoryview, /) -> int: ...
    def write(self, data: memoryview | bytes, /) -> int: ...
    def pending(self) -> int: ...
    def version(self) -> str | None: ...
    def cipher(self) -> tuple[str, str, int] | None: ...


class _Placeholder:
    """The owner once the handshake is over: one object, so one shared weak reference."""

    __slots__ = ("__weakref__",)


_DETACHED = _Placeholder()


class TlsOwner:
    """The channel as the handshake's owner: the SNI callback sets ``context`` on it."""

    if not TYPE_CHECKING:  # no instance dict (the channel declares the slots)
        __slots__ = ()
    _tls: TlsSocket | None

    @property
    def context(self) -> ssl.SSLContext:
        assert self._tls is not None
        return self._tls.context

    @context.setter
    def context(self, ctx: ssl.SSLContext) -> None:
        assert self._tls is not None
        self._tls.context = ctx


def wrap(ctx: ssl.SSLContext, sock: socket.socket, *, server_side: bool,
         server_hostname: str | None, owner: TlsOwner) -> tuple[socket.socket, TlsSocket]:
    """TLS (not started) on ``sock``: the socket that now owns the descriptor, and the TLS
    object.  ``ValueError`` as ``wrap_socket``; ``OSError`` from ``wrap_socket`` only (it
    asks for the peer's address: a reset connection)."""
    if not DIRECT:
        tls = ctx.wrap_socket(sock, server_side=server_side, server_hostname=server_hostname,
                              do_handshake_on_connect=False)
        return tls, cast(TlsSocket, tls)
    if server_side and server_hostname:
        raise ValueError("server_hostname can only be specified in client mode")
    if ctx.check_hostname and not server_hostname:
        raise ValueError("check_hostname requires server_hostname")
    assert _wrap_socket is not None and _encode_hostname is not None
    name = _encode_hostname(ctx, server_hostname)
    if server_side and ctx.sni_callback is not None:
        return sock, cast(TlsSocket, _wrap_socket(ctx, sock, server_side, name, owner=owner))
    return sock, cast(TlsSocket, _wrap_socket(ctx, sock, server_side, name))


def handshake_done(tls: TlsSocket) -> None:
    """Let go of the owner (the channel) now that no SNI callback can come."""
    if DIRECT and getattr(tls, "owner", None) is not None:
        tls.owner = _DETACHED  # type: ignore[attr-defined]


def close_notify(tls: TlsSocket) -> None:
    """Send TLS close_notify (RFC 8446 section 6.1) without waiting for the peer's (the
    non-blocking call raises ``SSLWantReadError`` once ours is out: the caller ignores it)."""
    if isinstance(tls, ssl.SSLSocket):
        tls.unwrap()
    else:
        tls.shutdown()  # type: ignore[attr-defined]
