"""Real proxy sessions with capturing on, for the capture tests (fake in-process upstream)."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from popproxy.capture.store import CaptureOptions, prepare_directory
from popproxy.proxy.demo_upstream import SAMPLE_MESSAGES, DemoUpstream, Mailbox
from popproxy.proxy.server import ProxyServer
from tests.helpers import LoopThread, make_config
from tests.integration.rawpop import RawPOP3, wait_for

USER = "alice"
PASSWORD = "S3cret Pa55"  # with a space: PASS takes the rest of the line (RFC 1939 s7)
WRONG_PASSWORD = "Wr0ng-Guess"
PLAIN_RESPONSE = base64.b64encode(b"\0" + USER.encode() + b"\0" + PASSWORD.encode())
# Every form a secret could take in a capture.
SECRETS = [
    s.encode() if isinstance(s, str) else s
    for s in (PASSWORD, "S3cret", WRONG_PASSWORD, PLAIN_RESPONSE,
              base64.b64encode(PASSWORD.encode()), base64.b64encode(WRONG_PASSWORD.encode()))
]
BODY_TEXT = b"This message came through the proxy."  # in SAMPLE_MESSAGES[0]
STAT_REPLY = b"+OK %d %d\r\n" % (len(SAMPLE_MESSAGES), sum(map(len, SAMPLE_MESSAGES)))


@contextmanager
def capturing_proxy(loop: LoopThread, upstream: DemoUpstream, directory: Path,
                    keep_bodies: bool = False) -> Iterator[ProxyServer]:
    """A proxy (plain listener) in front of ``upstream`` that captures into ``directory``."""
    upstream.users[USER.encode()] = Mailbox(PASSWORD.encode())
    options = CaptureOptions(prepare_directory(directory), keep_bodies)
    server = ProxyServer(make_config(upstream.port), capture=options)
    loop.call(server.start({"pop3": 0}))
    try:
        yield server
    finally:
        loop.call(server.stop(grace=1))


def run_sessions(server: ProxyServer) -> None:
    """USER/PASS (one wrong, one right), AUTH PLAIN with an initial response, AUTH LOGIN with
    two continuations; STAT, LIST, RETR and TOP.  Returns once every capture is written."""
    port = server.ports["pop3"]
    with RawPOP3(port) as c:
        assert c.command(f"USER {USER}").startswith(b"+OK")
        assert c.command(f"PASS {WRONG_PASSWORD}").startswith(b"-ERR")
        c.login(USER, PASSWORD)
        assert c.command("STAT") == STAT_REPLY
        assert c.command("LIST").startswith(b"+OK")
        assert BODY_TEXT in c.command("RETR 1")
        assert c.command("TOP 1 0").startswith(b"+OK")
        assert c.command("QUIT").startswith(b"+OK")
    with RawPOP3(port) as c:
        assert c.command(b"AUTH PLAIN " + PLAIN_RESPONSE).startswith(b"+OK")
        assert c.command("STAT") == STAT_REPLY
        c.command("QUIT")
    with RawPOP3(port) as c:
        assert c.command("AUTH LOGIN", multiline=False).startswith(b"+ ")
        assert c.command(base64.b64encode(USER.encode()), multiline=False).startswith(b"+ ")
        assert c.command(base64.b64encode(PASSWORD.encode()), multiline=False).startswith(b"+OK")
        assert c.command("STAT") == STAT_REPLY
        c.command("QUIT")
    wait_for(lambda: server.session_count == 0, what="the sessions to end")
