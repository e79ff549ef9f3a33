"""A recorded session as a mitmproxy TCP flow state (moved from test_recorder.py)."""

from __future__ import annotations

import itertools
from pathlib import Path

from popproxy.capture import tnetstring
from popproxy.capture.flow import FLOW_FORMAT_VERSION, FlowInfo, encode_flow, tcp_flow_state
from popproxy.capture.recorder import Message


def test_flow_state_matches_mitmproxy() -> None:
    """The flow of one recorded exchange decodes to exactly what mitmproxy 11.0.2 wrote for the
    same flow (tests/capture/data, made with mitmproxy.tcp.TCPFlow.get_state and its
    tnetstring in a separate venv)."""
    golden = Path(__file__).parent / "data" / "mitmproxy-11.0.2-tcpflow.tnetstring"
    info = FlowInfo(client=("127.0.0.1", 5000), listener=("127.0.0.1", 1110),
                    server=("mail.example", 110), started=1.5, ended=9.25,
                    client_tls_version="TLSv1.3", server_tls=True, comment="hi",
                    metadata={"popproxy.session": "abc"})
    messages = [Message(False, b"+OK POP3 proxy ready\r\n", 2.0), Message(True, b"STAT\r\n", 3.0)]
    ids = itertools.chain(["flow-id", "client-id", "server-id"])
    state = tcp_flow_state(messages, info, new_id=lambda: next(ids))
    assert tnetstring.loads(tnetstring.dumps(state)) == tnetstring.loads(golden.read_bytes())


def test_flow_without_upstream_or_tls() -> None:
    info = FlowInfo(("::1", 40000), ("::", 1110), None, 1.0, 2.0, client_tls_version="weird")
    state = tnetstring.loads(encode_flow([], info))
    assert isinstance(state, dict)
    client, server = state["client_conn"], state["server_conn"]
    assert isinstance(client, dict) and isinstance(server, dict)
    assert client["tls"] is True and client["tls_version"] is None  # not a mitmproxy value
    assert server["address"] is None and server["tls"] is False
    assert state["messages"] == []


def test_messages_metadata_and_ids() -> None:
    info = FlowInfo(("192.0.2.7", 40000), ("0.0.0.0", 110), ("mail.example", 995), 1.0, 2.0,
                    server_tls=True, comment="c", metadata={"popproxy.user": None})
    messages = [Message(True, b"USER a\r\n", 1.5), Message(False, b"+OK\r\n", 1.6)]
    state = tnetstring.loads(encode_flow(messages, info))
    assert isinstance(state, dict)
    assert (state["version"], state["type"]) == (FLOW_FORMAT_VERSION, "tcp")
    assert state["messages"] == [[True, b"USER a\r\n", 1.5], [False, b"+OK\r\n", 1.6]]
    assert state["metadata"] == {"popproxy.user": None}
    server = state["server_conn"]
    assert isinstance(server, dict) and server["tls"] is True
    assert server["address"] == ["mail.example", 995]
    ids = {state["id"], state["client_conn"]["id"], server["id"]}
    assert len(ids) == 3  # a fresh uuid for the flow and each connection
