"""A recorded session as a mitmproxy TCP flow (sans-io): what ``mitmproxy -r``, mitmweb and
``mitmproxy.io.FlowReader`` load.

A flow file is a sequence of tnetstring-encoded flow states.  The state written here is that of
``mitmproxy.tcp.TCPFlow.get_state()`` at flow format version 21 (mitmproxy 11.0): the fields of
``mitmproxy.flow.Flow``, ``messages`` as ``[from_client, content, timestamp]`` triples, and the
client and server connections with every field of ``mitmproxy.connection.Client``/``Server``
(the reader refuses missing or unknown ones).  Newer mitmproxy versions migrate version-21
files when they read them; mitmproxy 10 and older cannot read them.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from popproxy.capture import tnetstring
from popproxy.capture.recorder import Message

FLOW_FORMAT_VERSION = 21  # mitmproxy/version.py in mitmproxy 11.0.x

# mitmproxy.connection.TlsVersion: the reader refuses other values.
TLS_VERSIONS = frozenset({"SSLv3", "TLSv1", "TLSv1.1", "TLSv1.2", "TLSv1.3"})

Address = tuple[str, int]


@dataclass(frozen=True, slots=True)
class FlowInfo:
    """The connections around the recorded messages."""

    client: Address  # the POP3 client (after PROXY protocol: the real client)
    listener: Address  # the proxy's listening address the client connected to
    server: Address | None  # the upstream the session logged in to, if any
    started: float
    ended: float
    client_tls_version: str | None = None  # None: plain POP3 throughout
    server_tls: bool = False
    comment: str = ""
    metadata: Mapping[str, str | int | bool | None] = field(default_factory=dict)


def _new_id() -> str:
    return str(uuid.uuid4())


def _tls_fields(version: str | None) -> dict[str, tnetstring.Value]:
    return {
        "tls": version is not None,
        "tls_version": version if version in TLS_VERSIONS else None,
        "sni": None,
        "alpn": None,
        "alpn_offers": [],
        "cipher": None,
        "cipher_list": [],
        "certificate_list": [],
        "timestamp_tls_setup": None,
    }


def client_state(info: FlowInfo, new_id: Callable[[], str]) -> dict[str, tnetstring.Value]:
    """``mitmproxy.connection.Client.get_state()``."""
    return {
        "id": new_id(),
        "transport_protocol": "tcp",
        "error": None,
        "peername": [info.client[0], info.client[1]],
        "sockname": [info.listener[0], info.listener[1]],
        "mitmcert": None,
        "proxy_mode": "regular",
        "timestamp_start": info.started,
        "timestamp_end": info.ended,
        **_tls_fields(info.client_tls_version),
    }


def server_state(info: FlowInfo, new_id: Callable[[], str]) -> dict[str, tnetstring.Value]:
    """``mitmproxy.connection.Server.get_state()``: only the upstream's configured address is
    known here (the session's upstream socket is not part of the capture)."""
    tls = _tls_fields(None)
    tls["tls"] = info.server_tls and info.server is not None
    return {
        "id": new_id(),
        "transport_protocol": "tcp",
        "error": None,
        "address": None if info.server is None else [info.server[0], info.server[1]],
        "peername": None,
        "sockname": None,
        "timestamp_start": None,
        "timestamp_tcp_setup": None,
        "timestamp_end": None,
        "via": None,
        **tls,
    }


def tcp_flow_state(
    messages: Iterable[Message], info: FlowInfo, new_id: Callable[[], str] = _new_id
) -> dict[str, tnetstring.Value]:
    """``mitmproxy.tcp.TCPFlow.get_state()`` for one session."""
    return {
        "version": FLOW_FORMAT_VERSION,
        "type": "tcp",
        "id": new_id(),
        "error": None,
        "client_conn": client_state(info, new_id),
        "server_conn": server_state(info, new_id),
        "intercepted": False,
        "is_replay": None,
        "marked": "",
        "metadata": dict(info.metadata),
        "comment": info.comment,
        "timestamp_created": info.started,
        "backup": None,
        "messages": [[m.from_client, m.content, m.timestamp] for m in messages],
    }


def encode_flow(messages: Iterable[Message], info: FlowInfo) -> bytes:
    """The bytes of a one-flow mitmproxy flow file."""
    return tnetstring.dumps(tcp_flow_state(messages, info))
