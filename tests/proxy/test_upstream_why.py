"""``channel_errors.why_failed`` on timeouts: our deadline and the kernel's ETIMEDOUT are both
``TimeoutError`` (PEP 3151 maps errno 110 to it), and each must say what happened."""

from __future__ import annotations

import asyncio
import errno
import os

import pytest

from popproxy.proxy.channel_errors import why_failed as _why
from popproxy.proxy.upstream import UpstreamChannel, UpstreamConnection, UpstreamError
from tests.helpers import make_config


def test_our_deadline_says_the_configured_timeout() -> None:
    assert _why(TimeoutError(), 10.0) == "no answer within 10 s"


def test_the_kernels_etimedout_says_the_systems_words_not_our_timeout() -> None:
    """Regression: an ``OSError(ETIMEDOUT)`` from connect is a TimeoutError, so it read
    "no answer within 10 s" although our 10 s had not passed (the kernel gave up)."""
    exc = OSError(errno.ETIMEDOUT, "Connect call failed ('10.0.0.5', 110)")
    assert isinstance(exc, TimeoutError)
    assert _why(exc, 10.0) == os.strerror(errno.ETIMEDOUT)  # "Connection timed out"


@pytest.mark.parametrize(("raised", "said"), [
    (OSError(errno.ETIMEDOUT, "Connect call failed ('10.0.0.5', 110)"),
     os.strerror(errno.ETIMEDOUT)),
    (None, "no answer within 0.05 s"),  # the connector never answers: our deadline
])
def test_a_connect_timeout_reads_sensibly_either_way(raised: OSError | None,
                                                     said: str) -> None:
    settings = make_config(110).upstream.model_copy(update={"connect_timeout": 0.05})

    async def connect(host: str, port: int) -> UpstreamChannel:
        if raised is not None:
            raise raised
        await asyncio.sleep(5)
        raise AssertionError("the deadline should have passed")

    with pytest.raises(UpstreamError) as caught:
        asyncio.run(UpstreamConnection.open(settings, None, connect=connect))
    assert str(caught.value) == f"connect failed ({settings.host}:{settings.port}): {said}"
