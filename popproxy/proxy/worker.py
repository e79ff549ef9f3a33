"""One worker process of ``popproxy run`` with ``workers`` > 1 (docs/scaling.md).

The supervisor (``proxy/supervisor.py``) binds the listening sockets and starts each worker as
``python -m popproxy worker ...`` with those sockets passed as inherited file descriptors
(``--listen NAME=FD``): a fresh interpreter, not a ``fork()`` of one that already runs threads
(the scan pool, Redis clients), and the same code path with uvloop as with asyncio.  Each worker
gets its own socket of each listener, all on one port (``SO_REUSEPORT``): the kernel hashes each
new connection to one of them, whichever event loop the workers run.

A worker talks back through one pipe (``--status-fd``), a line per event: ``ready`` once it
accepts, ``reload ok`` / ``reload refused`` after each SIGHUP.  Signals: SIGTERM/SIGINT drain
(stop accepting, sessions get ``limits.shutdown_grace``), SIGHUP reloads the policy and the
certificates and reopens the audit log, SIGUSR1 only reopens the audit log.
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import logging
import os
import signal
import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from popproxy.auditlog import open_audit_log
from popproxy.capture.store import CaptureOptions
from popproxy.logsetup import configure as configure_logging
from popproxy.policy import ConfigError, Policy, load_config
from popproxy.proxy.event_loop import loop_factory, run_on
from popproxy.proxy.host_state import HostShare, default_db_path
from popproxy.proxy.observe import Observer
from popproxy.proxy.server import ProxyServer

log = logging.getLogger("popproxy.worker")

WORKER_COMMAND = "worker"  # python -m popproxy worker ...: started by the supervisor only
STATUS_READY = "ready"
STATUS_RELOAD_OK = "reload ok"
STATUS_RELOAD_REFUSED = "reload refused"
# The new policy runs, but the certificates it names were refused (edited or broken since the
# supervisor checked them): the old ones are still served (proxy/tls.py).
STATUS_RELOAD_CERTIFICATES_REFUSED = "reload ok, certificates refused"
PR_SET_PDEATHSIG = 1  # <sys/prctl.h>: a signal for us when the supervisor dies


@dataclass(frozen=True)
class WorkerArgs:
    config_path: Path
    worker_id: int
    workers: int  # how many the supervisor runs (they share the CPUs)
    listen: dict[str, int]  # listener name -> inherited listening socket's fd
    status_fd: int
    event_loop: str  # "asyncio" or "uvloop", already resolved by the supervisor
    capture: CaptureOptions | None
    parent_pid: int  # the supervisor: if it is not our parent any more, it died


def parse_args(argv: list[str]) -> tuple[WorkerArgs, str]:
    """The worker's command line (built by the supervisor, not typed by people)."""
    parser = argparse.ArgumentParser(prog="popproxy worker")
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--worker-id", type=int, required=True)
    parser.add_argument("--workers-total", type=int, default=1)
    parser.add_argument("--listen", action="append", default=[], metavar="NAME=FD")
    parser.add_argument("--status-fd", type=int, required=True)
    parser.add_argument("--event-loop", choices=("asyncio", "uvloop"), default="asyncio")
    parser.add_argument("--log-level", default="INFO")
    parser.add_argument("--capture", type=Path)
    parser.add_argument("--capture-bodies", action="store_true")
    parser.add_argument("--parent-pid", type=int, required=True)
    ns = parser.parse_args(argv)
    listen = {name: int(fd) for name, fd in (item.rsplit("=", 1) for item in ns.listen)}
    capture = None if ns.capture is None else CaptureOptions(ns.capture,
                                                             keep_bodies=ns.capture_bodies)
    return WorkerArgs(ns.config, ns.worker_id, ns.workers_total, listen, ns.status_fd,
                      ns.event_loop, capture, ns.parent_pid), ns.log_level


def _make_server(config: Policy, observer: Observer, capture: CaptureOptions | None,
                 worker_id: int, workers: int = 1) -> ProxyServer:
    """The one place a worker builds its ProxyServer: lockouts, known sources and verdicts go
    to the host's SQLite file (proxy/host_state.py; Redis instead where the policy names one),
    the session caps to the host's shared-memory slot table (proxy/host_slots.py)."""
    return ProxyServer(config, observer, capture,
                       host=HostShare(default_db_path(config.state_dir), worker_id, workers))


def reload_worker(server: ProxyServer, config_path: Path) -> str:
    """SIGHUP: reopen the audit log, re-read the policy (the supervisor validated it already),
    swap it in and reload the certificates.  The status line for the supervisor."""
    server.observer.audit.reopen()
    try:
        new = load_config(config_path)
    except ConfigError as exc:  # edited again between the supervisor's check and ours
        log.error("policy reload refused, keeping the old policy: %s", exc)
        server.observer.metrics.config_reloads.labels("policy", "refused").inc()
        server.observer.audit.event("config_reload", None, result="refused", error=str(exc))
        return STATUS_RELOAD_REFUSED
    if new == server.config:  # counted and logged as with one process (cli._reload_policy)
        log.info("policy unchanged: nothing to reload")
        server.observer.metrics.config_reloads.labels("policy", "unchanged").inc()
        ok = True
    else:
        ok = server.reload_policy(new)
    certificates_ok = server.reload_tls(policy_refused=not ok)
    if not ok:
        return STATUS_RELOAD_REFUSED
    return STATUS_RELOAD_OK if certificates_ok else STATUS_RELOAD_CERTIFICATES_REFUSED


def reload_outcome(workers: list[int], answers: list[str]) -> tuple[list[int], list[int]]:
    """From each worker's status line after a SIGHUP ("" if none came): the workers that
    refused the policy (or did not answer), and those that run it but kept the old
    certificates."""
    refused = [worker for worker, answer in zip(workers, answers, strict=True)
               if answer not in (STATUS_RELOAD_OK, STATUS_RELOAD_CERTIFICATES_REFUSED)]
    kept = [worker for worker, answer in zip(workers, answers, strict=True)
            if answer == STATUS_RELOAD_CERTIFICATES_REFUSED]
    return refused, kept


class StatusPipe:
    """The write end of the pipe to the supervisor; lines are short, so one write() each."""

    def __init__(self, fd: int) -> None:
        self._fd = fd

    def send(self, line: str) -> None:
        try:
            os.write(self._fd, line.encode() + b"\n")
        except OSError as exc:  # the supervisor is gone: PDEATHSIG stops us shortly
            log.warning("cannot report %r to the supervisor: %s", line, exc)


async def run_worker(config: Policy, args: WorkerArgs, status: StatusPipe) -> None:
    """Serve on the inherited sockets until SIGTERM/SIGINT, then drain."""
    observer = Observer(audit=open_audit_log(config.observability.audit_log))
    server = _make_server(config, observer, args.capture, args.worker_id, args.workers)
    sockets = {name: socket.socket(fileno=fd) for name, fd in args.listen.items()}
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    def on_hup() -> None:
        status.send(reload_worker(server, args.config_path))

    loop.add_signal_handler(signal.SIGHUP, on_hup)
    loop.add_signal_handler(signal.SIGUSR1, observer.audit.reopen)
    await server.start(sockets=sockets)
    status.send(STATUS_READY)
    log.info("worker %d ready (pid %d)", args.worker_id, os.getpid())
    await stop.wait()
    log.info("worker %d draining %d sessions", args.worker_id, server.session_count)
    await server.stop()


def _die_with_supervisor(prctl: Callable[..., int] | None = None) -> None:
    """Linux: SIGTERM (a drain) reaches us if the supervisor dies without stopping us."""
    if prctl is None:
        try:
            prctl = ctypes.CDLL(None, use_errno=True).prctl
        except (OSError, AttributeError):  # not Linux
            return
    prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def main_worker(argv: list[str]) -> int:
    """``python -m popproxy worker ...``: exit 2 on a bad policy (the supervisor checked it,
    but the file may have changed since)."""
    args, level = parse_args(argv)
    configure_logging(level)
    _die_with_supervisor()
    if os.getppid() != args.parent_pid:  # the supervisor died before prctl() took effect
        return 1
    try:
        config = load_config(args.config_path)
    except ConfigError as exc:
        log.error("worker %d: %s", args.worker_id, exc)
        return 2
    # uvloop: the supervisor only asks for it where it imports
    run_on(loop_factory(args.event_loop), run_worker(config, args, StatusPipe(args.status_fd)))
    return 0
