"""Scan worker processes with a hard deadline per job.

A thread cannot be stopped and a regex holds the GIL, so a scan in a thread of this process
could stall every session (issue 14).  Each job here runs in a child process
(:mod:`popproxy.proxy.scan_worker`) and the event loop only waits on a pipe.  A job past its
deadline, or whose worker dies, gets its worker killed (SIGKILL) and a fresh one is started for
the next job: one message costs at most its deadline of one core.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sys
from collections.abc import Callable, Sequence
from typing import Any

from popproxy.proxy.scan_worker import FRAME_HEADER, MAX_JOB_HEADER, encode_frame
from popproxy.proxy.tasks import spawn

log = logging.getLogger("popproxy.scan")

WORKER_COMMAND = (sys.executable, "-m", "popproxy.proxy.scan_worker")
# Starting a worker imports the scanner and loads the feeds (57,000 hosts: ~0.3 s); a worker
# that is not ready in this time is broken, not slow.
SPAWN_TIMEOUT = 60.0
# Pipe buffer of the parent's reader: answers are small JSON headers.
READ_LIMIT = 2 * MAX_JOB_HEADER
# Characters of a worker's error class name kept in JobFailed (and the log line).
MAX_ERROR_DETAIL = 80


class JobFailed(Exception):
    """A job got no answer: ``reason`` is "timeout" (killed at its deadline), "crash" (the
    worker died during the job, twice: once on a fresh worker too), "error" (the job raised
    inside the worker; ``detail`` names the class) or "unavailable" (no worker could be
    started: not the message's doing)."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"scan job failed: {reason} {detail}".strip())
        self.reason = reason
        self.detail = detail


class _Worker:
    __slots__ = ("proc",)

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    async def request(self, header: dict[str, Any], payload: bytes) -> dict[str, Any]:
        stdin, stdout = self.proc.stdin, self.proc.stdout
        assert stdin is not None and stdout is not None
        stdin.write(encode_frame(header, payload))
        await stdin.drain()
        (length,) = FRAME_HEADER.unpack(await stdout.readexactly(FRAME_HEADER.size))
        if length > MAX_JOB_HEADER:
            raise ValueError("answer header too large")
        answer = json.loads(await stdout.readexactly(length))
        if not isinstance(answer, dict):
            raise ValueError("answer is not an object")
        if answer.get("payload"):  # workers send no payloads back: files carry big results
            raise ValueError("unexpected payload")
        return answer

    def kill(self) -> None:
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()


class ScanPool:
    """``size`` worker processes, started when first needed and replaced when killed.

    ``on_kill(reason)`` is told of every killed or dead worker (the server counts them).
    """

    def __init__(self, scan_settings: dict[str, Any], size: int,
                 on_kill: Callable[[str], None],
                 command: Sequence[str] = WORKER_COMMAND) -> None:
        self._settings = scan_settings
        self._size = size
        self._on_kill = on_kill
        self._command = tuple(command)
        self._idle: list[_Worker] = []
        self._all: set[_Worker] = set()
        self._reaping: set[asyncio.subprocess.Process] = set()  # discarded, not yet exited
        self._slots: asyncio.Semaphore | None = None
        self._closed = False

    async def call(self, job: dict[str, Any], payload: bytes, deadline: float) -> dict[str, Any]:
        """Run ``job`` on ``payload`` in a worker; its answer, or JobFailed.

        ``deadline`` (seconds) starts once a worker is ready: a cold start is not charged to the
        message.  Cancelling the caller kills the worker too (its answer would be left in the
        pipe for the next job).
        """
        if self._closed:
            raise JobFailed("error", "pool closed")
        if self._slots is None:
            self._slots = asyncio.Semaphore(self._size)
        async with self._slots:
            try:
                answer = await self._run(job, payload, deadline)
            except JobFailed as failed:
                if failed.reason != "crash":
                    raise
                # A worker can die for reasons of its own (the OOM killer, an admin's kill):
                # a crash is charged to the message only if a fresh worker dies on it too.
                answer = await self._run(job, payload, deadline)
        if "error" in answer:
            raise JobFailed("error", str(answer["error"])[:MAX_ERROR_DETAIL])
        return answer

    async def _run(self, job: dict[str, Any], payload: bytes, deadline: float) -> dict[str, Any]:
        """One attempt on an idle (live) worker or a new one."""
        worker = self._live_idle() or await self._spawn_or_fail()
        try:
            async with asyncio.timeout(deadline):
                answer = await worker.request(job, payload)
        except TimeoutError:
            self._discard(worker, "timeout")
            raise JobFailed("timeout") from None
        except (OSError, EOFError, asyncio.IncompleteReadError, ValueError) as exc:
            self._discard(worker, "crash")
            raise JobFailed("crash", exc.__class__.__name__) from None
        except BaseException:  # cancelled: the worker is mid-job, so it cannot be reused
            self._discard(worker, None)
            raise
        self._idle.append(worker)
        return answer

    def _live_idle(self) -> _Worker | None:
        """An idle worker still running; workers that died while idle are counted and dropped."""
        while self._idle:
            worker = self._idle.pop()
            if worker.proc.returncode is None:
                return worker
            self._discard(worker, "crash")
        return None

    async def _spawn_or_fail(self) -> _Worker:
        try:
            return await self._spawn()
        except (OSError, EOFError, asyncio.IncompleteReadError, ValueError, TimeoutError,
                JobFailed) as exc:
            log.error("scan worker could not start: %s", exc.__class__.__name__)
            raise JobFailed("unavailable", "worker did not start") from None

    async def _spawn(self) -> _Worker:
        proc = await asyncio.create_subprocess_exec(
            *self._command, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            limit=READ_LIMIT)
        worker = _Worker(proc)
        self._all.add(worker)
        try:
            async with asyncio.timeout(SPAWN_TIMEOUT):
                ready = await worker.request({"scan": self._settings}, b"")
        except BaseException:
            self._discard(worker, None)
            raise
        if not ready.get("ready"):
            self._discard(worker, None)
            raise JobFailed("crash", "worker did not start")
        return worker

    def _discard(self, worker: _Worker, reason: str | None) -> None:
        worker.kill()
        self._all.discard(worker)
        if reason is not None:
            log.warning("scan worker %s killed (%s): starting a new one for the next job",
                        worker.proc.pid, reason)
            self._on_kill(reason)
        # Reap it in the background so no zombie is left behind (aclose waits for it too).
        self._reaping.add(worker.proc)
        spawn(self._reap(worker.proc), "reap-scan-worker")

    async def _reap(self, proc: asyncio.subprocess.Process) -> None:
        await proc.wait()
        self._reaping.discard(proc)

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> list[asyncio.subprocess.Process]:
        """Stop every worker (they would also exit at the end of their input); the processes
        to wait for."""
        self._closed = True
        procs = []
        for worker in list(self._all):
            if worker.proc.stdin is not None:
                worker.proc.stdin.close()
            worker.kill()
            procs.append(worker.proc)
        self._all.clear()
        self._idle.clear()
        return procs

    async def aclose(self) -> None:
        """``close`` and wait until the workers are gone (their pipes closed in this loop)."""
        for proc in [*self.close(), *self._reaping]:
            await proc.wait()
