"""TLS over memory BIOs for a ``Channel``: records in, plaintext out, records to the transport.

Split from ``channel.py`` (house rule: small modules): the channel owns the socket, the read
queue and flow control; a ``TlsPump`` owns one ``ssl.SSLObject`` and its two memory BIOs,
drives the handshake, decrypts what arrives and encrypts what is written, and decides when the
encrypted bytes go to the transport.  It reports back through three callables of its channel
(``deliver``, ``on_eof``, ``on_error``), so it never reaches into the channel's state.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Callable

from popproxy.proxy.channel_errors import consume_exception

# TLS records carry at most 16 KiB of plaintext (RFC 8446 section 5.1); read a few at a time.
TLS_READ_SIZE = 64 * 1024
# One TLS record's worth of plaintext per SSLObject.write (RFC 8446 section 5.1).
TLS_WRITE_SLICE = 16 * 1024
# Small TLS writes are sent at the end of the current event-loop step, together: the session
# tickets after a handshake go out with the greeting, a last reply with its close_notify.  Each
# loopback send costs as much CPU as a POP3 command's handling.  Past this many encrypted bytes
# waiting, they are sent at once: OpenSSL's outgoing BIO keeps about 4/3 of its largest size.
TLS_COALESCE_LIMIT = 16 * 1024


class TlsPump:
    """One TLS connection over memory BIOs, writing its records to ``transport``."""

    # Slots: one per TLS connection lives as long as it does (idle memory per session).
    __slots__ = (
        "_deliver", "_flush_scheduled", "_incoming", "_on_eof", "_on_error", "_outgoing",
        "_transport", "handshake", "obj",
    )

    def __init__(
        self,
        ctx: ssl.SSLContext,
        transport: asyncio.Transport | None,
        *,
        server_side: bool,
        server_hostname: str | None,
        deliver: Callable[[bytes], None],
        on_eof: Callable[[], None],
        on_error: Callable[[BaseException], None],
    ) -> None:
        """``deliver`` gets decrypted application bytes, ``on_eof`` the peer's close_notify
        (or a closed record stream), ``on_error`` a TLS failure (the channel aborts)."""
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self.obj = ctx.wrap_bio(
            self._incoming, self._outgoing, server_side=server_side,
            server_hostname=server_hostname,
        )
        self._transport = transport
        self._deliver, self._on_eof, self._on_error = deliver, on_eof, on_error
        self._flush_scheduled = False
        # Until the handshake ends; then None: whoever waits holds the future, and kept here
        # a done future costs ~200 bytes per idle connection.
        handshake: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.handshake: asyncio.Future[None] | None = handshake
        # Mark a failure as seen even if nobody awaits it (the session may be gone already).
        handshake.add_done_callback(consume_exception)

    @property
    def handshaking(self) -> bool:
        """The handshake has not finished: no application data can be sent yet."""
        return self.handshake is not None

    def end_handshake(self, exc: BaseException | None) -> None:
        """The handshake succeeded (``exc`` None) or failed: tell whoever waits for it."""
        handshake, self.handshake = self.handshake, None
        if handshake is None or handshake.done():
            return
        if exc is None:
            handshake.set_result(None)
        else:
            handshake.set_exception(exc)

    # ------------------------------------------------------------ incoming
    def receive(self, data: bytes) -> None:
        """Records from the socket: advance the handshake, deliver what decrypts."""
        self._incoming.write(data)
        self.pump()

    def receive_eof(self) -> None:
        """The peer closed TCP: whatever is still buffered is decrypted, then EOF."""
        self._incoming.write_eof()
        self.pump()

    def pump(self) -> None:
        """Run the handshake as far as the received records allow, then read records."""
        if self.handshake is not None and not self._advance_handshake():
            return
        self._read_records()
        self._flush_soon()  # post-handshake messages (tickets) wait for the next reply

    def _advance_handshake(self) -> bool:
        try:
            self.obj.do_handshake()
        except ssl.SSLWantReadError:
            self.flush()
            return False
        except (ssl.SSLError, OSError) as exc:
            self.flush()  # send the alert
            self.end_handshake(exc)
            self._on_error(exc)
            return False
        self.end_handshake(None)
        return True

    def _read_records(self) -> None:
        incoming, obj = self._incoming, self.obj
        while True:
            try:
                data = obj.read(TLS_READ_SIZE)
            except ssl.SSLWantReadError:
                return
            except ssl.SSLZeroReturnError:
                self._on_eof()
                return
            except (ssl.SSLError, OSError) as exc:
                self._on_error(exc)
                return
            if not data:
                self._on_eof()
                return
            self._deliver(data)
            if not incoming.pending and not incoming.eof and not obj.pending():
                # Nothing left to decrypt (no record bytes, no EOF, no plaintext in SSL): a
                # read now would only raise SSLWantReadError, an exception built and formatted
                # in C for nothing (about one per received record: issue 18).
                return

    # ------------------------------------------------------------ outgoing
    def write(self, data: bytes) -> None:
        """Encrypt ``data``; small writes are coalesced (see TLS_COALESCE_LIMIT)."""
        transport = self._transport
        if len(data) <= TLS_WRITE_SLICE:
            try:
                self.obj.write(data)
            except ssl.SSLError as exc:
                self._on_error(exc)
                return
            self._flush_soon()
            return
        # In record-sized slices, emptying the BIO after each: OpenSSL's outgoing memory BIO
        # keeps about 4/3 of the largest single write allocated for the rest of the
        # connection.  The records then go to the socket in one send, not one per record.
        outgoing, view = self._outgoing, memoryview(data)
        records = [outgoing.read()] if outgoing.pending else []
        for start in range(0, len(view), TLS_WRITE_SLICE):
            try:
                self.obj.write(view[start : start + TLS_WRITE_SLICE])
            except ssl.SSLError as exc:
                self._on_error(exc)
                return
            records.append(outgoing.read())
        if transport is not None and not transport.is_closing():
            transport.write(b"".join(records))

    def _flush_soon(self) -> None:
        """Send pending TLS output at the end of this loop step (see TLS_COALESCE_LIMIT)."""
        pending = self._outgoing.pending
        if pending >= TLS_COALESCE_LIMIT:
            self.flush()
        elif pending and not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._scheduled_flush)

    def _scheduled_flush(self) -> None:
        self._flush_scheduled = False
        self.flush()

    def flush(self) -> None:
        """Send every encrypted byte that waits in the outgoing BIO now."""
        out = self._outgoing.read()
        transport = self._transport
        if out and transport is not None and not transport.is_closing():
            transport.write(out)

    def close(self) -> None:
        """Send close_notify (RFC 8446 section 6.1) if the handshake finished."""
        if self.handshake is None:
            with contextlib.suppress(ssl.SSLError, OSError):
                self.obj.unwrap()
            self.flush()
