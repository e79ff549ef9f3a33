"""client_address: the socket peer without PROXY protocol; an untrusted balancer is refused
(the PROXY header paths run end to end in test_proxy_protocol_listener.py)."""

from __future__ import annotations

import asyncio
import ipaddress

from popproxy.metrics import Metrics
from popproxy.policy import Policy
from popproxy.proxy.client_address import client_address
from popproxy.proxy.socket_channel import SocketChannel
from tests.support.sockpair import unix_pair


def _listener(proxy_protocol: bool) -> Policy:
    listener: dict[str, object] = {"name": "pop3", "port": 110, "mode": "starttls"}
    if proxy_protocol:
        listener["proxy_protocol"] = {"trusted": ["10.0.0.0/8"]}
    return Policy.model_validate({"listeners": [listener], "upstream": {"port": 110}})


async def _address(proxy_protocol: bool, peer: object, metrics: Metrics
                   ) -> tuple[object, int] | None:
    ours, theirs = unix_pair()
    channel = SocketChannel(ours, proxy_header=proxy_protocol)  # inside the loop it runs on
    try:
        return await client_address(channel, _listener(proxy_protocol).listeners[0], peer,
                                    metrics.proxy_protocol_rejects)
    finally:
        channel.abort()
        theirs.close()


def test_the_socket_peer_without_proxy_protocol() -> None:
    metrics = Metrics()
    found = asyncio.run(_address(False, ("192.0.2.7", 4242), metrics))
    assert found == (ipaddress.ip_address("192.0.2.7"), 4242)
    assert asyncio.run(_address(False, None, metrics)) is None


def test_a_header_from_an_untrusted_peer_is_refused_and_counted() -> None:
    metrics = Metrics()
    assert asyncio.run(_address(True, ("192.0.2.7", 4242), metrics)) is None
    assert metrics.registry.get_sample_value(
        "popproxy_proxy_protocol_rejects_total", {"reason": "untrusted_peer"}) == 1
