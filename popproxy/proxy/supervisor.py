"""The supervisor of ``popproxy run`` with ``workers`` > 1 (docs/scaling.md).

It binds, per listener, one socket per worker on the same port (``SO_REUSEPORT``) and starts N
workers (``proxy/worker.py``), each inheriting its own: the kernel hashes every new connection
to one socket, so a burst is shared evenly on any event loop.  (One shared socket was not:
asyncio's loop accepts up to 100 queued connections per wake-up, so the first worker to wake
took nearly all of a burst.)  A dead worker's socket leaves its group at once, so new
connections go to the live workers; its replacement joins with a new one (listen_group.py).

It forwards SIGHUP (reload: validated here first, so a policy is applied by every worker or
by none), SIGUSR1 (reopen logs) and SIGTERM (drain); restarts a worker that dies, with a
backoff, counted in ``popproxy_worker_restarts_total``; and is the process systemd's
``Type=notify`` hears from (READY=1 once every worker accepts).  Workers never see QUIT from
here: a killed worker's sessions lose their upstream connection, which commits nothing
(RFC 1939 s6).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import socket
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from prometheus_client import multiprocess

from popproxy.auditlog import AuditLog
from popproxy.checks import FileCheckError, load_checked
from popproxy.metrics import SupervisorMetrics
from popproxy.policy import ConfigError, Policy
from popproxy.policy.restart import restart_needed
from popproxy.proxy.listen_group import bind_listeners, leave, rejoin
from popproxy.proxy.lockout_guard import load_secret
from popproxy.proxy.sdnotify import Notifier
from popproxy.proxy.tasks import spawn
from popproxy.proxy.tls import ServerTls, TlsConfigError, upstream_contexts
from popproxy.proxy.worker import STATUS_READY, WORKER_COMMAND, reload_outcome

log = logging.getLogger("popproxy.supervisor")

READY_TIMEOUT = 60.0  # seconds for every worker to accept (it loads feeds, starts scan pools)
RELOAD_TIMEOUT = 30.0  # seconds for every worker to answer a SIGHUP
# A worker that dies is started again after BACKOFF_FIRST seconds, doubling while it keeps
# dying young, up to BACKOFF_MAX (systemd's RestartSec idea, without hammering a broken host).
BACKOFF_FIRST = 0.5
BACKOFF_MAX = 30.0
STABLE_AFTER = 10.0  # seconds of life after which a worker's next death starts at BACKOFF_FIRST
KILL_AFTER_GRACE = 10.0  # seconds past shutdown_grace before a draining worker gets SIGKILL

ReleaseWorker = Callable[[int], None]  # worker id -> clear what the dead worker held


def no_release(worker_id: int) -> None:
    """Default ``release_worker``: nothing is shared between workers yet."""


def mark_dead(pid: int, metrics_dir: Path) -> None:
    """Drop a dead worker's ``live*`` gauge files; its counters stay in the sums."""
    multiprocess.mark_process_dead(pid, str(metrics_dir))  # type: ignore[no-untyped-call]


def usable_cpus() -> int:
    return len(os.sched_getaffinity(0))


def resolve_workers(value: str | int) -> int:
    """``auto`` is one worker per CPU this process may run on (cgroups' cpusets included)."""
    return usable_cpus() if value == "auto" else int(value)


class CertificatesRefused(ValueError):
    """A reload refused (also) because the server's certificates or keys do not load: one
    process would count and audit a refused certificate reload too (its re-read of them
    fails), so the supervisor does, besides the refused policy."""


def _certificate_problem(exc: ConfigError) -> bool:
    return isinstance(exc, FileCheckError) and any(
        finding.key.startswith("tls.certificates.") for finding in exc.findings)


def validate_reload(current: Policy, config_path: Path) -> Policy:
    """What a worker's reload would refuse, checked once here; ValueError says why
    (CertificatesRefused if the certificates are among the reasons)."""
    try:
        new, _ = load_checked(config_path)  # the schema and every file it names (checks.py)
    except ConfigError as exc:  # one line, as one process audits and logs it (cli.py)
        refusal = CertificatesRefused if _certificate_problem(exc) else ValueError
        raise refusal("; ".join(exc.details)) from None
    if reason := restart_needed(current, new):  # sockets, state_dir (policy/restart.py)
        raise ValueError(reason)
    if resolve_workers(new.workers) != resolve_workers(current.workers):
        log.warning("workers: a reload does not change the number of workers (restart)")
    try:
        upstream_contexts(new)
        if any(lst.mode != "plain" for lst in new.listeners):
            ServerTls(new.tls, new.state_dir)
        if new.lockout.enabled:  # a new secret_file must be readable (made once, here)
            load_secret(new.lockout, new.state_dir)
    except (TlsConfigError, OSError, ValueError) as exc:
        refusal = CertificatesRefused if isinstance(exc, TlsConfigError) else ValueError
        raise refusal(str(exc)) from None
    return new


@dataclass
class Slot:
    """One worker position: its process comes and goes, its id stays."""

    worker_id: int
    proc: asyncio.subprocess.Process | None = None
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    replies: asyncio.Queue[str] = field(default_factory=asyncio.Queue)
    started_at: float = 0.0
    backoff: float = 0.0

    def next_delay(self, now: float) -> float:
        if now - self.started_at >= STABLE_AFTER:
            self.backoff = BACKOFF_FIRST
        else:
            self.backoff = min(BACKOFF_MAX, max(BACKOFF_FIRST, self.backoff * 2))
        return self.backoff


class Supervisor:
    """Starts, watches, signals and stops the workers of one host."""

    def __init__(self, config: Policy, config_path: Path, workers: int,
                 worker_options: list[str], metrics: SupervisorMetrics, metrics_dir: Path,
                 notifier: Notifier | None = None,
                 release_worker: ReleaseWorker = no_release,
                 audit: AuditLog | None = None) -> None:
        self.config = config
        self.config_path = config_path
        self.worker_options = worker_options  # --event-loop, --log-level, --capture ...
        self.metrics = metrics
        self.metrics_dir = metrics_dir
        self.notifier = Notifier() if notifier is None else notifier
        self.release_worker = release_worker
        # The policy's audit log, for the reloads refused here (the workers write the rest).
        self.audit = AuditLog(None) if audit is None else audit
        self.slots = [Slot(i) for i in range(workers)]
        self.sockets: dict[str, list[socket.socket]] = {}  # listener -> one per slot
        self.ports: dict[str, int] = {}
        self._stopping = False
        self._watchers: list[asyncio.Task[None]] = []
        self.refusal = ""  # why the last reload was refused (systemd's STATUS= line)
        self._reloading = asyncio.Lock()  # two quick SIGHUPs: one reload after the other
        # Start-up: a worker that exits before it is ready (a bad policy, a missing file)
        # fails the start at once instead of being retried: systemd reports it.
        self._started = False
        self._start_failed = asyncio.Event()
        self._failure = ""

    @property
    def pids(self) -> list[int]:
        return [s.proc.pid for s in self.slots if s.proc is not None and s.proc.returncode is None]

    def status(self) -> str:
        """The line ``systemctl status`` shows (STATUS=)."""
        return f"serving: {len(self.sockets)} listeners, {len(self.pids)} workers"

    async def start(self) -> None:
        """Bind, start every worker, wait until each accepts (or raise RuntimeError)."""
        self.sockets = bind_listeners(self.config, len(self.slots))
        self.ports = {name: group[0].getsockname()[1] for name, group in self.sockets.items()}
        for slot in self.slots:
            self._watchers.append(spawn(self._keep_running(slot), f"worker-{slot.worker_id}"))
        all_ready = spawn(self._all_ready(), "workers-ready")
        failed = spawn(self._start_failed.wait(), "worker-start-failed")
        done, _ = await asyncio.wait({all_ready, failed}, timeout=READY_TIMEOUT,
                                     return_when=asyncio.FIRST_COMPLETED)
        all_ready.cancel()
        failed.cancel()
        if all_ready not in done:
            raise RuntimeError(self._failure or
                               f"workers not ready within {READY_TIMEOUT:.0f}s")
        self._started = True

    async def _all_ready(self) -> None:
        for slot in self.slots:
            await slot.ready.wait()

    def _own_sockets(self, slot: Slot) -> dict[str, socket.socket]:
        """The slot's socket of each listener (a new one for a replacement: listen_group)."""
        for group in self.sockets.values():
            rejoin(group, slot.worker_id, self.config.limits.listen_backlog)
        return {name: group[slot.worker_id] for name, group in self.sockets.items()}

    def _command(self, slot: Slot, status_fd: int) -> list[str]:
        listen = [f"--listen={name}={sock.fileno()}"
                  for name, sock in self._own_sockets(slot).items()]
        return [sys.executable, "-m", "popproxy", WORKER_COMMAND, "--config",
                str(self.config_path), "--worker-id", str(slot.worker_id),
                "--workers-total", str(len(self.slots)), *listen,
                "--status-fd", str(status_fd), "--parent-pid", str(os.getpid()),
                *self.worker_options]

    async def _start_worker(self, slot: Slot) -> asyncio.StreamReader:
        own = self._own_sockets(slot)  # before the pipe: rejoining a group may fail
        read_fd, write_fd = os.pipe()
        fds = (write_fd, *(sock.fileno() for sock in own.values()))
        # NOTIFY_SOCKET: only the supervisor talks to systemd (NotifyAccess=main).
        env = {key: value for key, value in os.environ.items() if key != "NOTIFY_SOCKET"}
        env["PROMETHEUS_MULTIPROC_DIR"] = str(self.metrics_dir)
        try:
            slot.proc = await asyncio.create_subprocess_exec(
                *self._command(slot, write_fd), pass_fds=fds, env=env,
                stdin=asyncio.subprocess.DEVNULL)
        finally:
            os.close(write_fd)
        loop = asyncio.get_running_loop()
        slot.started_at = loop.time()
        reader = asyncio.StreamReader()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader),
                                     os.fdopen(read_fd, "rb", 0))
        self.metrics.workers.set(len(self.pids))
        log.info("worker %d started (pid %d)", slot.worker_id, slot.proc.pid)
        return reader

    async def _keep_running(self, slot: Slot) -> None:
        """Run the slot's worker; when it dies (not by our stop), start another."""
        while not self._stopping:
            try:
                reader = await self._start_worker(slot)
            except OSError as exc:  # fork/exec failed (out of memory, process limit)
                delay = slot.next_delay(asyncio.get_running_loop().time())
                log.error("worker %d cannot be started: %s; retrying in %.1fs",
                          slot.worker_id, exc, delay)
                await asyncio.sleep(delay)
                continue
            assert slot.proc is not None
            while line := await reader.readline():
                text = line.decode(errors="replace").strip()
                if text == STATUS_READY:
                    slot.ready.set()
                else:
                    slot.replies.put_nowait(text)
            code = await slot.proc.wait()
            self._gone(slot, slot.proc.pid)
            reason = "signal" if code < 0 else "exit"
            if not self._started and not self._stopping:
                self._failure = (f"worker {slot.worker_id} ended ({reason} {abs(code)}) "
                                 "before it was ready (its error is above)")
                self._start_failed.set()
                return
            if self._stopping:
                return
            self.metrics.worker_restarts.labels(reason).inc()
            delay = slot.next_delay(asyncio.get_running_loop().time())
            log.error("worker %d (pid %d) ended (%s %d): its sessions were cut; "
                      "starting a new one in %.1fs", slot.worker_id, slot.proc.pid, reason,
                      abs(code), delay)
            await asyncio.sleep(delay)

    def _gone(self, slot: Slot, pid: int) -> None:
        """A worker exited: drop its live gauges and what it held in shared state."""
        slot.ready.clear()
        slot.replies.put_nowait("exited")  # answers a reload it will never answer
        for group in self.sockets.values():  # new connections go to the live workers
            leave(group, slot.worker_id)
        mark_dead(pid, self.metrics_dir)
        self.metrics.workers.set(len(self.pids))
        try:
            self.release_worker(slot.worker_id)
        except Exception:  # a failed clean-up must not stop the restart
            log.exception("release_worker(%d) failed", slot.worker_id)

    def _signal_all(self, sig: signal.Signals, ready_only: bool = False) -> list[Slot]:
        """Signal running workers; ``ready_only``: only those past start-up, whose handlers
        are installed (SIGHUP's default action would kill a starting one, and a starting
        worker reads the policy file anyway)."""
        sent = []
        for slot in self.slots:
            if ready_only and not slot.ready.is_set():
                continue
            if slot.proc is not None and slot.proc.returncode is None:
                slot.proc.send_signal(sig)
                sent.append(slot)
        return sent

    def reopen_logs(self) -> None:
        """SIGUSR1: every worker reopens its audit log file (logrotate), and so do we."""
        self.audit.reopen()
        self._signal_all(signal.SIGUSR1, ready_only=True)

    async def reload(self) -> bool:
        """SIGHUP: validate, then have every worker apply it; True only if all did."""
        async with self._reloading:
            self.notifier.reloading()
            self.refusal = ""
            self.audit.reopen()  # as each worker does on SIGHUP (logrotate)
            try:
                return await self._reload()
            finally:  # a refusal shows in systemctl status (STATUS=, ERRNO=), as with one
                self.notifier.reloaded(self.status(), self.refusal)

    async def _reload(self) -> bool:
        try:
            new = validate_reload(self.config, self.config_path)
        except ValueError as exc:
            # No worker sees this reload (nor re-reads its certificates, as one process does:
            # cli.py), so none counts or audits it: done here (docs/observability.md).
            log.error("policy reload refused, keeping the old policy and certificates "
                      "everywhere: %s", exc)
            self.metrics.reloads.labels("refused").inc()
            self.metrics.config_reloads.labels("policy", "refused").inc()
            self.audit.event("config_reload", None, result="refused", error=str(exc))
            if isinstance(exc, CertificatesRefused):  # (no worker re-reads them either)
                self.metrics.config_reloads.labels("certificates", "refused").inc()
                self.audit.event("tls_reload", None, result="refused",
                                 error=f"certificates: {exc}")
            self.refusal = str(exc).replace("\n", " ")
            return False
        for slot in self.slots:
            while not slot.replies.empty():
                slot.replies.get_nowait()
        sent = self._signal_all(signal.SIGHUP, ready_only=True)
        answers = await asyncio.gather(*(self._answer(slot) for slot in sent))
        refused, kept = reload_outcome([slot.worker_id for slot in sent], answers)
        if refused:
            log.error("policy reload: workers %s refused it or did not answer; they keep "
                      "the old policy", refused)
            self.metrics.reloads.labels("worker_refused").inc()
            self.refusal = f"workers {refused} refused the new policy (see the log)"
            return False
        self.config = new  # only once every worker runs it (the probe follows this one)
        if kept:  # the policy runs everywhere; those workers serve the old certificates
            log.error("policy reloaded by %d workers, but workers %s refused its "
                      "certificates and serve the old ones", len(sent), kept)
            self.metrics.reloads.labels("worker_refused").inc()
            self.refusal = f"workers {kept} refused the new certificates (see the log)"
            return False
        self.metrics.reloads.labels("ok").inc()
        log.info("policy reloaded by %d workers", len(sent))
        return True

    @staticmethod
    async def _answer(slot: Slot) -> str:
        """The worker's status line for this reload ("" if none came in time)."""
        try:
            async with asyncio.timeout(RELOAD_TIMEOUT):
                return await slot.replies.get()
        except TimeoutError:
            return ""

    async def stop(self) -> None:
        """SIGTERM every worker (each drains for shutdown_grace), SIGKILL the late ones."""
        self._stopping = True
        self.notifier.stopping("stopping: draining workers")
        self._signal_all(signal.SIGTERM)
        for group in self.sockets.values():
            for sock in group:
                sock.close()  # the workers hold their own copies until they stop accepting
        limit = self.config.limits.shutdown_grace + KILL_AFTER_GRACE
        procs = [s.proc for s in self.slots if s.proc is not None]
        try:
            async with asyncio.timeout(limit):
                await asyncio.gather(*(proc.wait() for proc in procs))
        except TimeoutError:
            log.error("workers still running %.0fs after SIGTERM: killed", limit)
            for proc in procs:
                if proc.returncode is None:
                    proc.kill()
        if self._watchers:  # they see each exit and clean up after it (_gone)
            _, late = await asyncio.wait(self._watchers, timeout=5)
            for task in late:
                task.cancel()
        for proc in procs:
            if proc.returncode is None:
                await proc.wait()
            mark_dead(proc.pid, self.metrics_dir)


class WorkersValueError(argparse.ArgumentTypeError, ValueError):
    """A bad ``--workers`` or ``$POPPROXY_WORKERS``: argparse shows an ``ArgumentTypeError``'s
    message as it is (for a bare ValueError it names the converter function)."""


def workers_value(text: str) -> str | int:
    if text == "auto":
        return text
    if not text.isdigit() or int(text) < 1:
        raise WorkersValueError(f"{text!r}: auto or a whole number from 1")
    return int(text)


def workers_setting(flag: str | int | None, config: Policy,
                    environ: dict[str, str] | None = None) -> int:
    """How many workers: ``--workers``, else ``$POPPROXY_WORKERS`` (the test suite sets 1),
    else the policy's ``workers`` (default auto: one per usable CPU)."""
    env = (dict(os.environ) if environ is None else environ).get("POPPROXY_WORKERS")
    value = flag if flag is not None else (workers_value(env) if env else config.workers)
    return resolve_workers(value)
