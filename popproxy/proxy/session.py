"""One client session: the I/O shell around the sans-io parser, state table and framer."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from popproxy.policy.config import Limits, Upstream
from popproxy.pop3 import limits, replies
from popproxy.pop3.capa import filter_upstream, parse_capa_body, render_capa
from popproxy.pop3.commands import CommandParser, valid_transaction_args
from popproxy.pop3.errors import ProtocolError
from popproxy.pop3.events import (
    NEED_DATA,
    BadCommand,
    BodyData,
    ClientEvent,
    Command,
    ConnectionClosed,
    EndOfBody,
    SaslResponse,
    StatusLine,
)
from popproxy.pop3.framing import Unstuffer
from popproxy.pop3.replies import Code
from popproxy.pop3.state import Event, SessionState, State
from popproxy.proxy.auth import AuthHandler
from popproxy.proxy.errors import SessionEnd
from popproxy.proxy.upstream import UpstreamConnection, UpstreamError

log = logging.getLogger("popproxy.session")

CLIENT_READ_CHUNK = 64 * 1024
GREETING = replies.ok("POP3 proxy ready")


@dataclass(frozen=True, slots=True)
class SessionSettings:
    upstream: Upstream
    limits: Limits


class Session:
    """Runs one client connection from greeting to close."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        settings: SessionSettings,
        peer: str,
    ) -> None:
        self._reader = reader
        self._writer = writer
        self.settings = settings
        self.peer = peer
        self.parser = CommandParser()
        self.state = SessionState()
        self.upstream: UpstreamConnection | None = None
        self.auth = AuthHandler(self)

    # ---------------------------------------------------------------- lifecycle
    async def run(self) -> None:
        """Serve the client; always closes both sides, never sending QUIT on its own."""
        try:
            self.write(GREETING)
            await self._serve()
        except SessionEnd:
            pass
        except UpstreamError as exc:
            log.warning("session %s: upstream failed: %s", self.peer, exc)
            self.write(replies.err("upstream server unavailable, try again later", Code.SYS_TEMP))
        except TimeoutError:
            self.write(replies.err("autologout: idle for too long", Code.SYS_TEMP))
        except (ConnectionError, OSError) as exc:
            log.info("session %s: client connection lost: %s", self.peer, exc.__class__.__name__)
        finally:
            await self._close()

    async def _close(self) -> None:
        if self.upstream is not None:
            self.upstream.close()
        try:
            if not self._writer.is_closing():
                await asyncio.wait_for(self._writer.drain(), 5)
        except (ConnectionError, OSError, TimeoutError):
            pass
        self._writer.close()

    def write(self, data: bytes) -> None:
        self._writer.write(data)

    async def _serve(self) -> None:
        while True:
            event = self.parser.next_event()
            if event is NEED_DATA:
                await self._writer.drain()
                await self._read_client()
                continue
            await self._handle(event)
            if self.state.state in (State.UPDATE, State.CLOSED):
                return

    async def _read_client(self) -> None:
        # RFC 1939 section 3: the autologout timer restarts with every client activity.
        async with asyncio.timeout(self.settings.limits.idle_timeout):
            data = await self._reader.read(CLIENT_READ_CHUNK)
        self.parser.receive_data(data)

    # ---------------------------------------------------------------- dispatch
    async def _handle(self, event: ClientEvent) -> None:
        if isinstance(event, ConnectionClosed):
            raise SessionEnd
        if isinstance(event, BadCommand):
            self._bad_command(event)
        elif isinstance(event, SaslResponse):
            await self.auth.sasl_step(event.data)
        elif not self.state.allows(event.verb):
            self.write(replies.err(f"{event.verb} is not valid in this state"))
        elif self.state.before_login:
            await self._before_login(event)
        else:
            await self._transaction(event)

    def _bad_command(self, event: BadCommand) -> None:
        self.write(replies.err(f"{event.reason.value}", Code.SYS_PERM))
        if self.parser.bad_count >= limits.MAX_BAD_COMMANDS:
            self.write(replies.err("too many bad commands, closing", Code.SYS_PERM))
            raise SessionEnd

    async def _before_login(self, cmd: Command) -> None:
        if cmd.verb == "CAPA":
            self.write(replies.multiline(replies.ok("capability list follows"), self._capa()))
        elif cmd.verb == "QUIT":
            self.state.apply(Event.QUIT)
            self.write(replies.ok("bye"))
        elif cmd.verb == "STLS":
            self.write(replies.err("STLS is not offered on this listener"))
        else:
            await self.auth.command(cmd)

    def _capa(self) -> list[bytes]:
        # RFC 2449 section 6: what this proxy offers before login.  TOP/UIDL are relayed.
        lines = [b"TOP", b"UIDL", b"RESP-CODES", b"AUTH-RESP-CODE", b"PIPELINING", b"USER"]
        lines.append(b"SASL " + " ".join(self.auth.mechanisms).encode())
        return lines

    async def _transaction(self, cmd: Command) -> None:
        if not valid_transaction_args(cmd):
            self.write(replies.err(f"wrong arguments for {cmd.verb} (RFC 1939)"))
        elif cmd.verb == "CAPA":
            await self._relay_capa(cmd)
        else:
            if cmd.verb == "QUIT":
                # Only a client QUIT reaches the upstream (RFC 1939 section 6: UPDATE state).
                self.state.apply(Event.QUIT)
            await self._relay(cmd)

    # ---------------------------------------------------------------- relaying
    def _connected(self) -> UpstreamConnection:
        if self.upstream is None:
            raise UpstreamError("no upstream connection in TRANSACTION state")
        return self.upstream

    async def _relay(self, cmd: Command) -> None:
        """Send ``cmd`` upstream and stream the answer to the client unchanged."""
        upstream = self._connected()
        upstream.send(cmd)
        while True:
            event = await upstream.next_event()
            if isinstance(event, StatusLine):
                self.write(event.raw)
                if not event.multiline:
                    return
            elif isinstance(event, BodyData):
                self.write(event.data)
                await self._writer.drain()
            elif isinstance(event, EndOfBody):
                self.write(b".\r\n")
                return
            else:
                raise UpstreamError("upstream closed the connection mid-response")

    async def _relay_capa(self, cmd: Command) -> None:
        upstream = self._connected()
        upstream.send(cmd)
        status = await upstream.next_event()
        if not isinstance(status, StatusLine):
            raise UpstreamError("upstream closed the connection")
        if not status.multiline:
            self.write(status.raw)
            return
        unstuffer, body = Unstuffer(), bytearray()
        while not isinstance(event := await upstream.next_event(), EndOfBody):
            if not isinstance(event, BodyData):
                raise UpstreamError("upstream closed the connection mid-response")
            body += unstuffer.feed(event.data)
            if len(body) > limits.MAX_CAPA_LINE * limits.MAX_CAPA_LINES:
                raise UpstreamError("CAPA response too large")
        try:
            caps = filter_upstream(parse_capa_body(bytes(body)))
        except ProtocolError as exc:
            raise UpstreamError(f"bad CAPA response: {exc}") from None
        self.write(replies.multiline(status.raw, render_capa(caps)))
