"""The read side a ``SocketChannel`` shares with nothing else: received bytes queued until the
session reads them, the read deadline, and the waiters.

Split from ``socket_channel.py`` (house rule: small modules) as a mixin with no slots of its
own (the channel declares them all: one flat object per connection).  The read timer is one per
channel, moved lazily: ``read`` re-arms it only for a deadline earlier than the armed one, and
a timer that fires early re-arms itself for the current deadline (a timer per read would be
created and cancelled once per command).

Also here: the per-thread receive buffer every socket read goes into (``receive_buffer``).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable
from typing import TYPE_CHECKING

from popproxy.proxy import deadlines

# Stop reading from the socket while this much received data waits to be consumed: a client
# that pipelines without reading replies cannot grow memory.
MAX_UNREAD = 1024 * 1024
# Size of the shared receive buffer: large reads keep multi-MiB RETR relays cheap.
READ_BUFFER_SIZE = 256 * 1024
# ``buffers.view``: this thread's receive buffer, once ``receive_buffer`` has made it (a channel
# does when it is created, so its reads take the attribute: no call per read, issue 18).
buffers = threading.local()


def receive_buffer() -> memoryview:
    """This thread's receive buffer, made once: every read into it is copied out at once, so
    one per thread serves every connection of its loop."""
    try:
        return buffers.view  # type: ignore[no-any-return]
    except AttributeError:
        view = buffers.view = memoryview(bytearray(READ_BUFFER_SIZE))
        return view


class ReadQueue:
    """``read``, ``unread``, ``awaiting_read`` over ``_chunks``; the subclass fills them."""

    if not TYPE_CHECKING:  # no instance dict; mypy would take it to mean "no attributes"
        __slots__ = ()
    _chunks: list[bytes]
    _unread: int
    _eof: bool
    _read_paused: bool
    _read_waiter: asyncio.Future[bytes] | None
    _read_timer: deadlines.Timer | None
    _deadline: float
    _loop: asyncio.AbstractEventLoop  # the one the channel lives on
    _reading: bool  # the socket is watched

    def _pause_reading(self) -> None:
        """Stop taking bytes out of the socket (the subclass's)."""

    def _resume_reading(self) -> None:
        """Take bytes out of the socket again (the subclass's)."""

    def _deliver(self, data: bytes) -> None:
        """Queue ``data``; the channel calls ``_wake_reader`` once its read event is done, so
        what arrived in one wake-up (TLS records, bulk reads) is one ``read``."""
        self._chunks.append(data)
        self._unread += len(data)
        if self._unread > MAX_UNREAD:
            self._pause_if_full()

    def _pause_if_full(self) -> None:
        """Past MAX_UNREAD: stop reading from the socket until ``read`` takes the bytes."""
        if not self._read_paused:
            self._read_paused = True
            self._pause_reading()

    def _set_eof(self) -> None:
        self._eof = True
        self._wake_reader()

    def _wake_reader(self) -> None:
        """Hand a waiting ``read`` everything queued (``b""`` at EOF)."""
        waiter = self._read_waiter
        if waiter is not None and (self._chunks or self._eof):
            self._read_waiter = None
            if not waiter.done():  # (cancelled: the bytes stay for the next read)
                waiter.set_result(self._take())
            timer = self._read_timer
            if timer is not None and type(timer) is not deadlines.CoarseTimer:
                # A short deadline (under deadlines.COARSE_MIN) has its own loop timer: about
                # 0.5 KiB with its callback and context (uvloop), kept until it would fire.
                # Only a wheel entry is worth keeping for the next read (``_arm_read_timer``).
                self._drop_read_timer()

    def _drop_read_timer(self) -> None:
        if self._read_timer is not None:  # it would keep this channel alive
            self._read_timer.cancel()
            self._read_timer = None

    @property
    def unread(self) -> int:
        """Bytes received (decrypted, if TLS) that ``read`` has not returned yet."""
        return self._unread

    @property
    def awaiting_read(self) -> bool:
        """A ``read`` waits with nothing received: the reader owes its peer no reply."""
        waiter = self._read_waiter
        return waiter is not None and not waiter.done() and not self._chunks

    def read(self, timeout: float | None = None) -> Awaitable[bytes]:
        """All received bytes not yet read; ``b""`` once the peer has closed.

        ``timeout``: seconds to wait for data, then ``TimeoutError`` (one timer per channel,
        moved lazily: see the module docstring).

        Not a coroutine: with nothing received it returns the waiter itself, which
        ``_wake_reader`` resolves with the bytes.  An idle session waits in this read, and a
        coroutine frame around the waiter is memory held per idle connection (issue 18 item
        6, bench/README.md "Idle memory").  So a read cancelled in the loop step that resolved
        it drops its bytes: whoever cancels a read must give up the channel (every caller
        does: login deadline, shutdown, an upstream's CAPA timeout close it).
        """
        if self._chunks or self._eof:
            return self._ready()
        # The channel's loop, not asyncio.get_running_loop(): that is a getpid() per call in
        # CPython 3.11, and this runs at every read (issue 18).
        loop = self._loop
        waiter: asyncio.Future[bytes] = loop.create_future()
        self._read_waiter = waiter
        if timeout is None:  # an earlier read's timer must not cut this one
            self._drop_read_timer()
        else:
            deadline = loop.time() + timeout
            timer = self._read_timer
            # The common case, inline (every read of a session): a long deadline the armed
            # wheel timer serves (see _arm_read_timer; a wheel entry's when() is key * TICK,
            # read here without the call; any other timer takes the general path).
            if (type(timer) is deadlines.CoarseTimer and timeout >= deadlines.COARSE_MIN
                    and timer.key * deadlines.TICK <= deadline + deadlines.TICK):
                self._deadline = deadline
            else:
                self._arm_read_timer(loop, deadline, timeout)
        if not self._reading:  # a resting socket: watch it again
            self._resume_reading()
        return waiter

    async def _ready(self) -> bytes:
        # A coroutine, not a done future: half the CPU of awaiting a future (this is every
        # read of a bulk transfer).
        return self._take()

    def _take(self) -> bytes:
        data = self._chunks[0] if len(self._chunks) == 1 else b"".join(self._chunks)
        self._chunks.clear()
        self._unread = 0
        if self._read_paused:
            self._read_paused = False
            self._resume_reading()
        return data

    def _arm_read_timer(self, loop: asyncio.AbstractEventLoop, deadline: float,
                        timeout: float) -> None:
        """``deadline``: loop time ``timeout`` seconds from now (the caller read the clock)."""
        self._deadline = deadline
        timer = self._read_timer
        # A long deadline may fire up to TICK late (deadlines.py): a timer in its bucket
        # serves it, not only an earlier one (issue 18: one re-arm per read of a login).
        late = deadlines.TICK if timeout >= deadlines.COARSE_MIN else 0.0
        if timer is not None and timer.when() <= deadline + late:
            return  # it fires first and re-arms itself for the new deadline
        if timer is not None:
            timer.cancel()  # a shorter timeout than the armed one (greeting vs response)
        self._read_timer = deadlines.call_at(loop, deadline, self._read_timer_fired)

    def _read_timer_fired(self) -> None:
        self._read_timer = None
        waiter = self._read_waiter
        if waiter is None or waiter.done():
            return  # no read is waiting: the next one arms a timer again
        loop = self._loop
        if loop.time() >= self._deadline:
            self._read_waiter = None
            waiter.set_exception(TimeoutError())
        else:
            self._read_timer = deadlines.call_at(loop, self._deadline, self._read_timer_fired)
