"""Certificates: self-signed on first run, SNI selection, reload that keeps a good context."""

from __future__ import annotations

import contextlib
import poplib
import ssl
from pathlib import Path

import pytest

from popproxy.policy import Policy, Tls
from popproxy.proxy.tls import ServerTls
from tests.helpers import LoopThread, running_demo, running_proxy
from tests.tls.conftest import Pki, tls_config


def test_self_signed_serves_tls(tmp_path: Path, loop: LoopThread) -> None:
    with running_demo(loop) as demo:
        config = tls_config_without_certs(demo.port, tmp_path)
        with running_proxy(config, loop) as proxy:
            ctx = ssl.create_default_context(cafile=str(tmp_path / "selfsigned.crt"))
            client = poplib.POP3_SSL("127.0.0.1", proxy.server.ports["tls"], context=ctx)
            assert client.getwelcome().startswith(b"+OK")
            client.quit()


def tls_config_without_certs(port: int, state: Path) -> Policy:
    return Policy.model_validate(
        {
            "listeners": [{"name": "tls", "port": 1, "mode": "tls"}],
            "upstream": {"port": port},
            "state_dir": str(state),
        }
    )


def test_sni_selects_certificate(pki: Pki, tmp_path: Path) -> None:
    other = tmp_path / "other.pem"
    pki.ca.issue_cert("mail.example.test").private_key_and_cert_chain_pem.write_to_path(str(other))
    settings = Tls.model_validate(
        {
            "certificates": [
                {"cert": str(pki.server_pem), "key": str(pki.server_pem), "names": ["localhost"]},
                {"cert": str(other), "key": str(other), "names": ["mail.example.test"]},
            ]
        }
    )
    server = ServerTls(settings, tmp_path)
    client_ctx = pki.client_context()
    for name in ("mail.example.test", "localhost"):
        assert _handshake(server.context, client_ctx, name) == name


def _handshake(server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext, name: str) -> str:
    """In-memory handshake; returns the CN of the certificate the server chose."""
    c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))
    client = client_ctx.wrap_bio(c_in, c_out, server_hostname=name)
    server = server_ctx.wrap_bio(s_in, s_out, server_side=True)
    for _ in range(10):
        for obj in (client, server):
            with contextlib.suppress(ssl.SSLWantReadError):
                obj.do_handshake()
        s_in.write(c_out.read())
        c_in.write(s_out.read())
    cert = client.getpeercert()
    assert cert is not None
    kind, first_name = cert["subjectAltName"][0]  # type: ignore[str-unpack]
    assert kind == "DNS"
    return str(first_name)


def test_reload_keeps_old_certificate_when_new_one_is_broken(
    pki: Pki, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    pem = tmp_path / "live.pem"
    pem.write_bytes(pki.server_pem.read_bytes())
    settings = Tls.model_validate({"certificates": [{"cert": str(pem), "key": str(pem)}]})
    server = ServerTls(settings, tmp_path)
    before = server.context
    pem.write_text("-----BEGIN CERTIFICATE-----\nbroken\n-----END CERTIFICATE-----\n")
    with caplog.at_level("ERROR"):
        assert server.reload() is False
    assert server.context is before
    assert any("keeping the previous certificates" in r.message for r in caplog.records)
    pem.write_bytes(pki.server_pem.read_bytes())
    assert server.reload() is True
    assert server.context is not before


def test_tls13_only_refuses_tls12(pki: Pki, loop: LoopThread, tmp_path: Path) -> None:
    with running_demo(loop) as demo:
        config = tls_config(
            pki,
            demo.port,
            tmp_path,
            tls={
                "certificates": [{"cert": str(pki.server_pem), "key": str(pki.server_pem)}],
                "min_version": "TLSv1.3",
            },
        )
        with running_proxy(config, loop) as proxy:
            ctx12 = pki.client_context()
            ctx12.maximum_version = ssl.TLSVersion.TLSv1_2
            with pytest.raises(ssl.SSLError):
                poplib.POP3_SSL("127.0.0.1", proxy.server.ports["tls"], context=ctx12)
            ok = poplib.POP3_SSL(
                "127.0.0.1", proxy.server.ports["tls"], context=pki.client_context()
            )
            assert isinstance(ok.sock, ssl.SSLSocket)
            assert ok.sock.version() == "TLSv1.3"
            ok.quit()
