"""The proxy side of captures: a recorder per session, its flow file written when it ends."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING

from popproxy.capture.flow import Address, FlowInfo, encode_flow
from popproxy.capture.recorder import SessionRecorder
from popproxy.capture.store import CaptureOptions, write_capture
from popproxy.policy.decisions import DEFAULT_UPSTREAM

if TYPE_CHECKING:
    from popproxy.proxy.session import Session

log = logging.getLogger("popproxy.capture")


def new_recorder(options: CaptureOptions | None) -> SessionRecorder | None:
    """A recorder when capturing is on (``popproxy run --capture DIR``), else None."""
    return None if options is None else SessionRecorder(time.time, options.keep_bodies)


async def save_capture(session: Session, recorder: SessionRecorder,
                       options: CaptureOptions) -> Path | None:
    """Write the session's flow file (encoding and writing off the event loop); a failure is
    logged, never raised: a capture must not break the proxy."""
    recorder.finish()
    info = flow_info(session, recorder)
    try:
        path = await asyncio.to_thread(_encode_and_write, options.directory, session.id,
                                       recorder, info)
    except Exception as exc:  # disk full, permissions, a bug: the session has ended anyway
        log.error("session %s: capture not written: %s: %s", session.id,
                  exc.__class__.__name__, exc)
        return None
    log.debug("session %s: capture written to %s", session.id, path)
    return path


def _encode_and_write(directory: Path, session_id: str, recorder: SessionRecorder,
                      info: FlowInfo) -> Path:
    return write_capture(directory, session_id, encode_flow(recorder.messages, info))


def flow_info(session: Session, recorder: SessionRecorder) -> FlowInfo:
    """The connections of ``session`` as mitmproxy describes them."""
    settings = session.settings
    listener = settings.listener
    upstreams = {DEFAULT_UPSTREAM: settings.policy.upstream, **settings.policy.upstreams}
    target = upstreams.get(session.upstream_name) if session.upstream is not None else None
    return FlowInfo(
        client=_client_address(session),
        listener=(listener.host, listener.port),
        server=None if target is None else (target.host, target.port),
        server_tls=target is not None and target.mode != "plain",
        started=recorder.started,
        ended=recorder.ended if recorder.ended is not None else time.time(),
        client_tls_version=_client_tls_version(session),
        comment=_comment(session, recorder),
        metadata={
            "popproxy.session": session.id,
            "popproxy.listener": listener.name,
            "popproxy.user": session.user,
            "popproxy.upstream": session.upstream_name if target is not None else None,
            "popproxy.redacted": "PASS argument, APOP digest, AUTH responses",
            "popproxy.bodies": "kept" if recorder.keep_bodies else "omitted",
            "popproxy.bodies_omitted": recorder.bodies_omitted,
            "popproxy.truncated": recorder.truncated,
            "popproxy.dropped_octets": recorder.dropped,
        },
    )


def _client_address(session: Session) -> Address:
    """The client's address (after a PROXY header: the real client's), from ``ip:port``."""
    host, _, port = session.peer.rpartition(":")
    ip = str(session.client_ip) if session.client_ip is not None else host
    return ip, int(port) if port.isdigit() else 0


def _client_tls_version(session: Session) -> str | None:
    if not session.state.tls_active:
        return None
    sslobj = session.client.ssl_object()
    return (sslobj.version() if sslobj is not None else None) or "unknown"


def _comment(session: Session, recorder: SessionRecorder) -> str:
    parts = [f"popproxy session {session.id} on {session.settings.listener.name}"
             + (f" (user {session.user})" if session.user else ""),
             "passwords and AUTH data redacted (***)"]
    if recorder.keep_bodies:
        parts.append("message bodies kept (--capture-bodies)")
    elif recorder.bodies_omitted:
        parts.append(f"{recorder.bodies_omitted} message bodies omitted")
    if recorder.truncated:
        parts.append(f"capture truncated at {recorder.limit} octets: {recorder.dropped} more "
                     "octets not kept")
    return "; ".join(parts)
