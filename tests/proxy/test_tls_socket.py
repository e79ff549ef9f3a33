"""``tls_socket``: a ``SocketChannel``'s TLS through the C object (``DIRECT``) and through the
``ssl.SSLSocket`` fallback, on both event loops: SNI, the upstream's name check, close_notify,
a ragged EOF, and what ``SSLSocket._create`` refuses."""

from __future__ import annotations

import asyncio
import importlib
import socket
import ssl
import weakref
from collections.abc import Iterator

import pytest
import trustme

from popproxy.proxy import tls_socket
from popproxy.proxy.socket_channel import SocketChannel
from popproxy.proxy.tls import CertPair, build_server_context
from tests.support.sockpair import LOOPS, run, tcp_pair, tls_contexts

SERVER_CTX, CLIENT_CTX = tls_contexts()
OTHER_NAME = "mail.example.test"


@pytest.fixture(params=[True, False], ids=["direct", "sslsocket"])
def direct(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[bool]:
    if request.param and not tls_socket.DIRECT:
        pytest.skip("this Python has no _ssl._SSLSocket as tls_socket uses it")
    monkeypatch.setattr(tls_socket, "DIRECT", request.param)
    yield request.param


@pytest.fixture(scope="module")
def sni_setup(tmp_path_factory: pytest.TempPathFactory) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """A server context choosing between two certificates by SNI, and a client trusting both."""
    ca, tmp = trustme.CA(), tmp_path_factory.mktemp("sni")
    pairs = []
    for name in ("localhost", OTHER_NAME):
        pem = tmp / f"{name}.pem"
        ca.issue_cert(name).private_key_and_cert_chain_pem.write_to_path(str(pem))
        pairs.append(CertPair(pem, pem, (name,)))
    client = ssl.create_default_context()
    ca.configure_trust(client)
    return build_server_context(tuple(pairs), "TLSv1.2"), client


def _blocking_client(sock: socket.socket, ctx: ssl.SSLContext, name: str) -> ssl.SSLSocket:
    return ctx.wrap_socket(sock, server_hostname=name)


@pytest.mark.parametrize("loop", LOOPS)
def test_sni_picks_the_certificate_then_close_notify(
        direct: bool, loop: str, sni_setup: tuple[ssl.SSLContext, ssl.SSLContext]) -> None:
    server_ctx, client_ctx = sni_setup

    async def main() -> None:
        server, client = tcp_pair()
        channel = SocketChannel(server, server_ctx)
        secure, _ = await asyncio.gather(
            asyncio.to_thread(_blocking_client, client, client_ctx, OTHER_NAME),
            channel.start_implicit_tls())
        cert = secure.getpeercert()
        assert cert is not None and cert["subjectAltName"] == (("DNS", OTHER_NAME),)
        tls = channel.ssl_object()
        assert tls is not None and tls.version() == secure.version()
        assert tls.cipher() == secure.cipher()
        assert isinstance(tls, ssl.SSLSocket) is not direct  # no wrapper on the direct path
        assert weakref.getweakrefcount(channel) == 0  # the owner is let go after the handshake
        secure.sendall(b"NOOP\r\n")
        assert await channel.read(timeout=5) == b"NOOP\r\n"
        channel.close()
        assert await asyncio.to_thread(secure.recv, 10) == b""  # close_notify, not a reset
        secure.close()

    run(loop, main)


def _blocking_server(sock: socket.socket) -> BaseException | None:
    try:
        with SERVER_CTX.wrap_socket(sock, server_side=True) as tls:
            tls.sendall(b"+OK upstream\r\n")
            tls.recv(10)  # until the channel closes
    except (OSError, ssl.SSLError) as exc:
        return exc
    return None


@pytest.mark.parametrize("loop", LOOPS)
@pytest.mark.parametrize("name", ["localhost", "wrong.example.test"])
def test_the_upstream_side_checks_the_certificate_name(direct: bool, loop: str,
                                                       name: str) -> None:
    async def main() -> None:
        ours, theirs = tcp_pair()  # ours: non-blocking, as upstream_socket connects it
        channel = SocketChannel(ours)
        serving = asyncio.ensure_future(asyncio.to_thread(_blocking_server, theirs))
        if name == "localhost":
            await channel.start_tls(CLIENT_CTX, server_side=False, server_hostname=name)
            assert await channel.read(timeout=5) == b"+OK upstream\r\n"
            channel.close()
            assert await serving is None
        else:
            with pytest.raises(ssl.SSLCertVerificationError, match="mismatch"):
                await channel.start_tls(CLIENT_CTX, server_side=False, server_hostname=name)
            assert channel.is_closing()
            assert isinstance(await serving, ssl.SSLError)  # it got our alert
        theirs.close()

    run(loop, main)


@pytest.mark.parametrize("loop", LOOPS)
def test_a_ragged_eof_is_eof_not_a_failure(direct: bool, loop: str) -> None:
    """A peer that closes TCP without close_notify: the reader sees EOF as with a FIN."""
    async def main() -> None:
        server, client = tcp_pair()
        channel = SocketChannel(server, SERVER_CTX)
        secure, _ = await asyncio.gather(
            asyncio.to_thread(_blocking_client, client, CLIENT_CTX, "localhost"),
            channel.start_implicit_tls())
        secure.sendall(b"QUIT\r\n")
        secure.shutdown(socket.SHUT_WR)  # TCP FIN, no close_notify (SSLSocket drops TLS first)
        data = await channel.read(timeout=5)
        if data:
            assert data == b"QUIT\r\n"
            data = await channel.read(timeout=5)
        assert data == b"" and not channel._failed
        channel.close()

    run(loop, main)


def test_what_wrap_socket_refuses_is_refused(direct: bool) -> None:
    """``SSLSocket._create``'s checks: a client context that checks names needs one (else it
    would verify the chain but not the name), and only a client sends one."""
    async def main() -> None:
        ours, theirs = tcp_pair()
        channel = SocketChannel(ours)
        with pytest.raises(ValueError, match="check_hostname requires server_hostname"):
            channel.switch_to_tls(CLIENT_CTX, server_side=False)
        with pytest.raises(ValueError, match="only be specified in client mode"):
            channel.switch_to_tls(SERVER_CTX, server_side=True, server_hostname="localhost")
        assert channel.ssl_object() is None
        channel.abort()
        theirs.close()

    run("asyncio", main)


def test_the_feature_check_falls_back_without_the_private_api(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A Python without the C ``_ssl._SSLSocket`` gets ``wrap_socket`` (the fallback the
    ``sslsocket`` cases above run), decided at import."""
    assert tls_socket.DIRECT  # CPython 3.11, this project's
    monkeypatch.delattr(ssl._ssl, "_SSLSocket")  # type: ignore[attr-defined]
    try:
        assert importlib.reload(tls_socket).DIRECT is False
    finally:
        monkeypatch.undo()
        importlib.reload(tls_socket)
    assert tls_socket.DIRECT
