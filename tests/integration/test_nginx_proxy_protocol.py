"""A real nginx on a dual-stack listener sending PROXY v1 in front of popproxy.

nginx writes an IPv4 client's address as an IPv4-mapped IPv6 address (``PROXY TCP6
::ffff:127.0.0.2 ...``).  popproxy refused that line as malformed once, which dropped every IPv4
client behind such a balancer; now the policy must see 127.0.0.2 (allowed) and 127.0.0.3 (not).
"""

from __future__ import annotations

import pytest

from popproxy.proxy.demo_upstream import DemoUpstream
from tests.helpers import LoopThread, make_config, running_proxy
from tests.integration.nginx_stream import running_nginx
from tests.integration.test_haproxy import (
    ALLOWED,
    OTHER,
    _fetch_welcome,
    _first_bytes,
    _listener,
    _refusal,
)


def test_an_ipv4_client_behind_nginx_dual_stack_is_judged_by_its_own_address(
    loop_thread: LoopThread, demo_upstream: DemoUpstream, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("DEBUG", logger="popproxy")
    config = make_config(demo_upstream.port, listeners=_listener(allow=[f"{ALLOWED}/32"]))
    with running_proxy(config, loop_thread) as proxy, running_nginx(proxy.port) as nginx:
        source_port = _fetch_welcome(nginx.port, ALLOWED)
        assert _first_bytes(nginx.port, OTHER) == b""  # nginx's own 127.0.0.1 is not allowed
    text = caplog.text
    assert f"session {ALLOWED}:{source_port}: login ok" in text
    assert _refusal(text, OTHER, "source network not in listener allow list")
    assert "bad or missing PROXY header" not in text and "untrusted" not in text
