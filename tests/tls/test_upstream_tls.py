"""Upstream TLS (implicit and STLS) is verified; a failed check sends no credentials."""

from __future__ import annotations

import poplib
import ssl
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from popproxy.policy import Policy
from popproxy.proxy.demo_upstream import DemoUpstream
from tests.helpers import LoopThread, make_config, running_demo, running_proxy
from tests.tls.conftest import Pki


def _server_context(pki: Pki, *names: str) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    pki.ca.issue_cert(*names).configure_cert(ctx)
    return ctx


def _config(port: int, mode: str, **upstream: object) -> Policy:
    config = make_config(port)
    data = config.model_dump(mode="json")
    data["upstream"].update({"mode": mode, **upstream})
    return Policy.model_validate(data)


@contextmanager
def _proxied(loop: LoopThread, demo: DemoUpstream, config_for: object) -> Iterator[int]:
    with running_demo(loop, demo):
        assert callable(config_for)
        with running_proxy(config_for(demo.port), loop) as proxy:
            yield proxy.port


@pytest.mark.parametrize("mode", ["tls", "starttls"])
def test_upstream_tls_verified_login_works(
    mode: str, pki: Pki, loop: LoopThread, tmp_path: Path
) -> None:
    demo = DemoUpstream(tls=_server_context(pki, "localhost"), tls_mode=mode)
    config_for = lambda port: _config(  # noqa: E731
        port, mode, host="127.0.0.1", server_name="localhost", ca_file=str(pki.ca_file)
    )
    with _proxied(loop, demo, config_for) as port:
        client = poplib.POP3("127.0.0.1", port)
        client.user("demo")
        assert client.pass_("demo").startswith(b"+OK")
        assert client.stat()[0] == 3
        client.quit()
    assert b"USER" in demo.commands_seen
    assert (b"STLS" in demo.commands_seen) == (mode == "starttls")


@pytest.mark.parametrize("mode", ["tls", "starttls"])
def test_upstream_cert_mismatch_sends_no_credentials(mode: str, pki: Pki, loop: LoopThread) -> None:
    demo = DemoUpstream(tls=_server_context(pki, "wrong.example"), tls_mode=mode)
    config_for = lambda port: _config(  # noqa: E731
        port, mode, host="127.0.0.1", server_name="localhost", ca_file=str(pki.ca_file)
    )
    with _proxied(loop, demo, config_for) as port:
        client = poplib.POP3("127.0.0.1", port)
        client.user("demo")
        with pytest.raises(poplib.error_proto, match=r"^b'-ERR \[SYS/TEMP\]"):
            client.pass_("demo")
    assert b"USER" not in demo.commands_seen and b"PASS" not in demo.commands_seen


def test_upstream_untrusted_ca_refused(pki: Pki, loop: LoopThread) -> None:
    demo = DemoUpstream(tls=_server_context(pki, "localhost"), tls_mode="tls")
    # No ca_file: the system CAs do not know the test CA.
    config_for = lambda port: _config(port, "tls", server_name="localhost")  # noqa: E731
    with _proxied(loop, demo, config_for) as port:
        client = poplib.POP3("127.0.0.1", port)
        client.user("demo")
        with pytest.raises(poplib.error_proto, match=r"SYS/TEMP"):
            client.pass_("demo")
    assert demo.commands_seen == []


def test_upstream_verify_false_is_explicit_and_warns(
    pki: Pki, loop: LoopThread, caplog: pytest.LogCaptureFixture
) -> None:
    demo = DemoUpstream(tls=_server_context(pki, "wrong.example"), tls_mode="tls")
    config_for = lambda port: _config(port, "tls", verify=False)  # noqa: E731
    with caplog.at_level("WARNING"), _proxied(loop, demo, config_for) as port:
        client = poplib.POP3("127.0.0.1", port)
        client.user("demo")
        assert client.pass_("demo").startswith(b"+OK")
        client.quit()
    assert any("verification is OFF" in r.message for r in caplog.records)


def test_verify_is_on_by_default() -> None:
    assert make_config(110).upstream.verify is True
