"""``await_client_handshake``: a client handshake's outcome, counted and audited once, and what
the session sees of a failure (``SessionEnd`` for TLS, the timeout as it came)."""

from __future__ import annotations

import asyncio
import ssl
from types import SimpleNamespace
from typing import Any, cast

import pytest

from popproxy.metrics import Metrics
from popproxy.proxy.client_channel import ClientChannel
from popproxy.proxy.client_handshake import await_client_handshake
from popproxy.proxy.errors import SessionEnd
from popproxy.proxy.settings import SessionSettings


class _Tls:
    def version(self) -> str:
        return "TLSv1.3"


class _ExpiredLoginDeadline:
    """The session's login deadline (``asyncio.Timeout``) after it fired."""

    def expired(self) -> bool:
        return True


def _run(outcome: str, login_timer: object = None
         ) -> tuple[Metrics, list[dict[str, Any]], BaseException | None]:
    metrics, events = Metrics(), []
    settings = cast(SessionSettings, SimpleNamespace(
        observer=SimpleNamespace(metrics=metrics), handshake_timeout=0.01,
        listener=SimpleNamespace(name="pop3s")))
    client = cast(ClientChannel, SimpleNamespace(ssl_object=_Tls))

    def audit(event: str, **fields: object) -> None:
        events.append({"event": event, **fields})

    async def main() -> BaseException | None:
        handshake = asyncio.get_running_loop().create_future()
        if outcome == "ok":
            handshake.set_result(None)
        elif outcome == "cancelled":  # the login deadline's cancellation reaches the wait
            handshake.cancel()
        elif outcome == "failed":
            error = ssl.SSLError(1, "no shared cipher")
            error.reason = "NO_SHARED_CIPHER"  # (OpenSSL's raise sets it)
            handshake.set_exception(error)
        try:
            await await_client_handshake(handshake, "implicit", settings, client, "peer", audit,
                                         cast(asyncio.Timeout | None, login_timer))
        except BaseException as exc:  # what the session would see
            return exc
        return None

    return metrics, events, asyncio.run(main())


def _count(metrics: Metrics, version: str, result: str) -> float | None:
    return metrics.registry.get_sample_value(
        "popproxy_tls_handshakes_total", {"kind": "implicit", "version": version, "result": result})


def test_a_handshake_done_is_counted_by_version_and_audited() -> None:
    metrics, events, raised = _run("ok")
    assert raised is None and _count(metrics, "TLSv1.3", "ok") == 1
    assert events == [{"event": "tls", "mode": "implicit", "result": "ok", "version": "TLSv1.3"}]


@pytest.mark.parametrize(("outcome", "error", "result"), [
    ("failed", SessionEnd, "failed"),  # a TLS failure ends the session (logged there)
    ("timeout", TimeoutError, "timeout"),  # raised as it came: the session's handlers decide
])
def test_a_failed_handshake_is_counted_once(outcome: str, error: type[BaseException],
                                             result: str) -> None:
    metrics, events, raised = _run(outcome)
    assert isinstance(raised, error)
    assert _count(metrics, "none", result) == 1
    assert [e["result"] for e in events] == [result]
    reason = "no_shared_cipher" if outcome == "failed" else "timeout"
    assert metrics.registry.get_sample_value("popproxy_tls_handshake_failures_total",
                                             {"listener": "pop3s", "reason": reason}) == 1


def test_a_handshake_the_login_deadline_cut_counts_as_a_timeout() -> None:
    """Cancelled by the session's expired login deadline: a timeout (result and reason), not a
    failure, and the cancellation goes on to the session's deadline handling as it came."""
    metrics, events, raised = _run("cancelled", _ExpiredLoginDeadline())
    assert isinstance(raised, asyncio.CancelledError)
    assert _count(metrics, "none", "timeout") == 1 and _count(metrics, "none", "failed") is None
    assert [(e["result"], e["reason"]) for e in events] == [("timeout", "timeout")]
    assert metrics.registry.get_sample_value("popproxy_tls_handshake_failures_total",
                                             {"listener": "pop3s", "reason": "timeout"}) == 1
