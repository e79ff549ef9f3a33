"""Fixtures for TLS tests: a trustme CA, certificate files and a proxy with both listener modes."""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import trustme

from popproxy.policy import Policy
from tests.helpers import LoopThread, RunningProxy, running_demo, running_proxy
from tests.support.tools import require_tool as support_require_tool


@dataclass
class Pki:
    ca: trustme.CA
    ca_file: Path
    server_pem: Path  # chain + key for localhost / 127.0.0.1 / ::1

    def client_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca_file))


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    ca = trustme.CA()
    base = tmp_path_factory.mktemp("pki")
    ca_file = base / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    server = ca.issue_cert("localhost", "127.0.0.1", "::1")
    pem = base / "server.pem"
    server.private_key_and_cert_chain_pem.write_to_path(str(pem))
    return Pki(ca, ca_file, pem)


@pytest.fixture(scope="module")
def loop() -> Iterator[LoopThread]:
    lt = LoopThread()
    yield lt
    lt.close()


def tls_config(pki: Pki, upstream_port: int, state_dir: Path, **extra: object) -> Policy:
    data: dict[str, object] = {
        "listeners": [
            {"name": "stls", "port": 1, "mode": "starttls"},
            {"name": "tls", "port": 2, "mode": "tls"},
        ],
        "upstream": {"port": upstream_port, "connect_timeout": 5, "greeting_timeout": 5},
        "tls": {"certificates": [{"cert": str(pki.server_pem), "key": str(pki.server_pem)}]},
        "state_dir": str(state_dir),
    }
    data.update(extra)
    return Policy.model_validate(data)


@pytest.fixture(scope="module")
def tls_proxy(
    pki: Pki, loop: LoopThread, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningProxy]:
    with running_demo(loop) as demo:
        config = tls_config(pki, demo.port, tmp_path_factory.mktemp("state"))
        with running_proxy(config, loop) as proxy:
            yield proxy


@pytest.fixture
def require_tool() -> None:
    """mpop comes from apt (installed by .ci/run); under CI a missing tool is a failure."""
    support_require_tool("mpop", "apt-get install mpop")
