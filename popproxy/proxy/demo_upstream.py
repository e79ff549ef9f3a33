"""A tiny in-process POP3 server with sample mail: for the demo and for unit tests only.

It reuses the sans-io parser and stuffer, keeps mailboxes in memory and, like a real server,
commits DELE only on QUIT (RFC 1939 section 6).
"""

from __future__ import annotations

import asyncio
import hashlib
import ssl
from dataclasses import dataclass, field

from popproxy.pop3 import replies
from popproxy.pop3.commands import CommandParser
from popproxy.pop3.events import NEED_DATA, Command, ConnectionClosed
from popproxy.pop3.framing import stuff_body


def _message(subject: str, body: str) -> bytes:
    head = f"From: demo@example.test\r\nTo: demo@example.test\r\nSubject: {subject}\r\n\r\n"
    return (head + body).encode()


SAMPLE_MESSAGES = (
    _message("Welcome to popproxy", "This message came through the proxy.\r\n"),
    _message("Dots", ".a line starting with a dot\r\n..two dots\r\n.\r\nend\r\n"),
    _message("Link", "See https://www.example.test/ for details.\r\n"),
)


@dataclass
class Mailbox:
    password: bytes
    messages: list[bytes] = field(default_factory=lambda: list(SAMPLE_MESSAGES))
    # UIDLs by message number; unset: a hash of the content.  Set, they behave like a server
    # that reuses a UIDL for new content (Dovecot's pop3_reuse_xuidl, qpopper).
    uidls: list[bytes] | None = None


class DemoUpstream:
    """``users`` maps username -> Mailbox.  Start with ``start(host, port)``."""

    def __init__(
        self,
        users: dict[bytes, Mailbox] | None = None,
        tls: ssl.SSLContext | None = None,
        tls_mode: str = "plain",
        pipelining: bool = False,
    ) -> None:
        """``tls_mode``: ``plain``, ``starttls`` (offers STLS) or ``tls`` (implicit);
        ``pipelining``: list PIPELINING in CAPA (RFC 2449 section 6.6)."""
        self.users = users if users is not None else {b"demo": Mailbox(b"demo")}
        self.server: asyncio.Server | None = None
        self.port = 0
        self.commands_seen: list[bytes] = []  # verbs only, for tests (never passwords)
        # The verbs that arrived together in one read: shows whether a client pipelined.
        self.command_batches: list[list[bytes]] = []
        # Connections not yet closed on our side: at 0, every byte a client sent before it
        # closed has been read, so a test can check what never arrived without sleeping.
        self.open_connections = 0
        self.pipelining = pipelining
        self._tls = tls
        self._tls_mode = tls_mode

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        implicit = self._tls if self._tls_mode == "tls" else None
        self.server = await asyncio.start_server(self._serve, host, port, ssl=implicit)
        self.port = self.server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()

    def _can_stls(self, writer: asyncio.StreamWriter) -> bool:
        return self._tls_mode == "starttls" and writer.get_extra_info("sslcontext") is None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = _DemoConnection(self)
        parser = CommandParser()
        self.open_connections += 1
        writer.write(replies.ok("demo POP3 server ready"))
        try:
            while not conn.done:
                event = parser.next_event()
                if event is NEED_DATA:
                    await writer.drain()
                    parser.receive_data(await reader.read(65536))
                    self.command_batches.append([])
                elif isinstance(event, ConnectionClosed):
                    break
                elif isinstance(event, Command) and event.verb == "STLS" and self._can_stls(writer):
                    self.commands_seen.append(b"STLS")
                    writer.write(replies.ok("begin TLS"))
                    await writer.drain()
                    assert self._tls is not None
                    await writer.start_tls(self._tls)
                    parser = CommandParser()
                elif isinstance(event, Command):
                    self.commands_seen.append(event.verb.encode())
                    if self.command_batches:
                        self.command_batches[-1].append(event.verb.encode())
                    writer.write(conn.answer(event))
                else:
                    writer.write(replies.err("bad command"))
            await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()
            self.open_connections -= 1


class _DemoConnection:
    def __init__(self, server: DemoUpstream) -> None:
        self.server = server
        self.user: bytes | None = None
        self.box: Mailbox | None = None
        self.deleted: set[int] = set()
        self.done = False

    def answer(self, cmd: Command) -> bytes:
        if cmd.verb == "QUIT":
            self.done = True
            if self.box is not None:
                self.box.messages = [
                    m for i, m in enumerate(self.box.messages, 1) if i not in self.deleted
                ]
            return replies.ok("bye")
        if cmd.verb == "CAPA":
            caps = [b"TOP", b"UIDL", b"USER", b"IMPLEMENTATION demo"]
            if self.server.pipelining:
                caps.append(b"PIPELINING")
            return replies.multiline(replies.ok("capabilities"), caps)
        if self.box is None:
            return self._authorization(cmd)
        return self._transaction(cmd, self.box)

    def _authorization(self, cmd: Command) -> bytes:
        if cmd.verb == "USER" and cmd.args:
            self.user = cmd.args[0]
            return replies.ok()
        if cmd.verb == "PASS" and self.user is not None and cmd.args:
            box = self.server.users.get(self.user)
            if box is not None and box.password == cmd.args[0]:
                self.box = box
                return replies.ok("logged in")
            return replies.err("authentication failed", replies.Code.AUTH)
        return replies.err("not logged in")

    @staticmethod
    def _listing(verb: str, box: Mailbox, number: int) -> str:
        msg = box.messages[number - 1]
        if verb == "LIST":
            return str(len(msg))
        if box.uidls is not None:
            return box.uidls[number - 1].decode()
        return hashlib.sha256(msg).hexdigest()[:16]

    def _visible(self, box: Mailbox) -> list[tuple[int, bytes]]:
        return [(i, m) for i, m in enumerate(box.messages, 1) if i not in self.deleted]

    def _transaction(self, cmd: Command, box: Mailbox) -> bytes:
        visible = dict(self._visible(box))
        number = int(cmd.args[0]) if cmd.args and cmd.args[0].isdigit() else 0
        msg = visible.get(number)
        if cmd.verb in ("NOOP", "RSET"):
            if cmd.verb == "RSET":
                self.deleted.clear()
            return replies.ok()
        if cmd.verb == "STAT":
            return replies.ok(f"{len(visible)} {sum(map(len, visible.values()))}")
        if cmd.verb in ("LIST", "UIDL") and not cmd.args:
            lines = [f"{i} {self._listing(cmd.verb, box, i)}".encode() for i in visible]
            return replies.multiline(replies.ok(), lines)
        if msg is None:
            return replies.err("no such message")
        if cmd.verb in ("LIST", "UIDL"):
            return replies.ok(f"{number} {self._listing(cmd.verb, box, number)}")
        if cmd.verb == "DELE":
            self.deleted.add(number)
            return replies.ok("deleted")
        if cmd.verb == "RETR":
            return replies.ok(f"{len(msg)} octets") + stuff_body(msg)
        if cmd.verb == "TOP" and len(cmd.args) == 2 and cmd.args[1].isdigit():
            return replies.ok() + stuff_body(_top(msg, int(cmd.args[1])))
        return replies.err("unknown command")




def _top(msg: bytes, lines: int) -> bytes:
    head, sep, body = msg.partition(b"\r\n\r\n")
    kept = body.split(b"\r\n")[:lines]
    return head + sep + b"\r\n".join(kept) + (b"\r\n" if kept and lines else b"")
