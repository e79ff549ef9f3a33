"""The proxy side of captures: a recorder per session, its flow file written when it ends."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from popproxy.capture.flow import Address, FlowInfo, encode_flow
from popproxy.capture.recorder import SessionRecorder
from popproxy.capture.store import CaptureOptions, write_capture
from popproxy.policy import Listener, Upstream
from popproxy.policy.decisions import IPAddress

log = logging.getLogger("popproxy.capture")


@dataclass(frozen=True, slots=True)
class FlowFacts:
    """What a capture says about its session, given by the session when it ends."""

    id: str
    peer: str  # ip:port of the connection (the proxy's, after a PROXY header)
    client_ip: IPAddress | None  # the real client's (after a PROXY header)
    user: str | None
    listener: Listener
    upstream_name: str | None  # None: no upstream connection was made
    upstreams: Mapping[str, Upstream]  # every configured upstream by name
    client_tls_version: str | None  # None: plaintext


def new_recorder(options: CaptureOptions | None) -> SessionRecorder | None:
    """A recorder when capturing is on (``popproxy run --capture DIR``), else None."""
    return None if options is None else SessionRecorder(time.time, options.keep_bodies)


async def save_capture(facts: FlowFacts, recorder: SessionRecorder,
                       options: CaptureOptions) -> Path | None:
    """Write the session's flow file (encoding and writing off the event loop); a failure is
    logged, never raised: a capture must not break the proxy."""
    recorder.finish()
    info = flow_info(facts, recorder)
    try:
        path = await asyncio.to_thread(_encode_and_write, options.directory, facts.id,
                                       recorder, info)
    except Exception as exc:  # disk full, permissions, a bug: the session has ended anyway
        log.error("session %s: capture not written: %s: %s", facts.id,
                  exc.__class__.__name__, exc)
        return None
    log.debug("session %s: capture written to %s", facts.id, path)
    return path


def _encode_and_write(directory: Path, session_id: str, recorder: SessionRecorder,
                      info: FlowInfo) -> Path:
    return write_capture(directory, session_id, encode_flow(recorder.messages, info))


def flow_info(facts: FlowFacts, recorder: SessionRecorder) -> FlowInfo:
    """The connections of a session as mitmproxy describes them."""
    listener = facts.listener
    name = facts.upstream_name
    target = facts.upstreams.get(name) if name is not None else None
    return FlowInfo(
        client=_client_address(facts),
        listener=(listener.host, listener.port),
        server=None if target is None else (target.host, target.port),
        server_tls=target is not None and target.mode != "plain",
        started=recorder.started,
        ended=recorder.ended if recorder.ended is not None else time.time(),
        client_tls_version=facts.client_tls_version,
        comment=_comment(facts, recorder),
        metadata={
            "popproxy.session": facts.id,
            "popproxy.listener": listener.name,
            "popproxy.user": facts.user,
            "popproxy.upstream": name if target is not None else None,
            "popproxy.redacted": "PASS argument, APOP digest, AUTH responses",
            "popproxy.bodies": "kept" if recorder.keep_bodies else "omitted",
            "popproxy.bodies_omitted": recorder.bodies_omitted,
            "popproxy.truncated": recorder.truncated,
            "popproxy.dropped_octets": recorder.dropped,
        },
    )


def _client_address(facts: FlowFacts) -> Address:
    """The client's address (after a PROXY header: the real client's), from ``ip:port``."""
    host, _, port = facts.peer.rpartition(":")
    ip = str(facts.client_ip) if facts.client_ip is not None else host
    return ip, int(port) if port.isdigit() else 0


def _comment(facts: FlowFacts, recorder: SessionRecorder) -> str:
    parts = [f"popproxy session {facts.id} on {facts.listener.name}"
             + (f" (user {facts.user})" if facts.user else ""),
             "passwords and AUTH data redacted (***)"]
    if recorder.keep_bodies:
        parts.append("message bodies kept (--capture-bodies)")
    elif recorder.bodies_omitted:
        parts.append(f"{recorder.bodies_omitted} message bodies omitted")
    if recorder.truncated:
        parts.append(f"capture truncated at {recorder.limit} octets: {recorder.dropped} more "
                     "octets not kept")
    return "; ".join(parts)
