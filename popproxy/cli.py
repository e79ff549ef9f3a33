"""popproxy, a POP3 security proxy.  Commands (each has --help):

  popproxy run --config PATH      run the proxy (PATH: a policy file or a directory of them)
  popproxy check-config PATH...   validate each policy, print a summary; exit 0 or 1
  popproxy schema                 print the policy's JSON Schema (for editor completion)
  popproxy scan PATH...           scan mail files (.eml, directories, mbox, Maildir)
  popproxy quarantine list|show|release|purge   the held messages
  popproxy warm --config PATH --user U    judge mailboxes before their first login
  popproxy cert --config PATH             certificates and the fingerprints clients pin
  popproxy explain --user U --from IP     which rules, route, upstream and lockouts apply
  popproxy test-login USER                a real upstream login through the policy's route
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
from pathlib import Path

from popproxy import __version__
from popproxy.auditlog import open_audit_log
from popproxy.capture.store import CaptureOptions, prepare_directory
from popproxy.check_cli import check_config, startup_problem
from popproxy.checks import load_checked
from popproxy.logsetup import LOG_LEVELS
from popproxy.logsetup import configure as configure_logging
from popproxy.policy import ConfigError, Policy
from popproxy.proxy.demo_upstream import DemoUpstream
from popproxy.proxy.event_loop import loop_factory, run_on
from popproxy.proxy.health import UpstreamProbe
from popproxy.proxy.host_slots import geometry
from popproxy.proxy.host_state import default_db_path, release_all_workers, release_worker
from popproxy.proxy.http import OpsServer
from popproxy.proxy.multiproc import serve_workers
from popproxy.proxy.observe import Observer
from popproxy.proxy.sdnotify import Notifier, report_status
from popproxy.proxy.server import ProxyServer
from popproxy.proxy.slot_table import SlotTableError
from popproxy.proxy.supervisor import workers_setting, workers_value
from popproxy.proxy.tasks import spawn
from popproxy.proxy.tls import TlsConfigError, certificate_line
from popproxy.proxy.worker import WORKER_COMMAND, main_worker
from popproxy.statefiles import private_dir

log = logging.getLogger("popproxy")


RUN_HELP = ("run the proxy in the foreground (systemd: packaging/popproxy.service); SIGHUP "
            "reloads the policy and certificates, SIGTERM drains and stops")
CHECK_HELP = ("validate policies and the files they name (certificates, keys, feeds) without "
              "starting anything; exit 0 if every one is usable")
SCHEMA_HELP = "print the policy's JSON Schema (editor completion) or its key reference"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="popproxy", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"popproxy {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help=RUN_HELP, description=RUN_HELP)
    run.add_argument("--config", "-c", type=Path, required=True,
                     help="policy file, or a directory whose *.yaml files are merged")
    run.add_argument("--log-level", default="INFO", type=str.upper, choices=LOG_LEVELS)
    run.add_argument("--capture", type=Path, metavar="DIR",
                     help="write a capture of every session to DIR as a mitmproxy TCP flow, "
                          "passwords and AUTH data redacted (docs/capture.md)")
    run.add_argument("--event-loop", choices=("auto", "asyncio", "uvloop"), default="auto",
                     help="auto (default): uvloop where it imports (Linux), which spends less "
                          "CPU per session (bench/README.md), else asyncio's own loop")
    run.add_argument("--workers", type=workers_value, default=None,
                     help="worker processes: auto (one per usable CPU) or N; overrides the "
                          "policy's workers: and $POPPROXY_WORKERS (docs/scaling.md)")
    run.add_argument("--capture-bodies", action="store_true",
                     help="with --capture: keep RETR/TOP message bodies (sensitive: mail "
                          "contents on disk)")
    check = sub.add_parser("check-config", aliases=["check"], help=CHECK_HELP,
                           description=CHECK_HELP)
    check.add_argument("paths", nargs="*", type=Path, help="policy files or directories")
    check.add_argument("--config", "-c", type=Path, action="append", default=[],
                       help="same as a positional path")
    check.add_argument("--dump", action="store_true",
                       help="print the effective policy (YAML, defaults filled in)")
    check.add_argument("--no-files", dest="files", action="store_false",
                       help="check the policy only, not the files it names (examples, CI)")
    schema = sub.add_parser("schema", help=SCHEMA_HELP, description=SCHEMA_HELP)
    schema.add_argument("--markdown", action="store_true",
                        help="print the key reference of docs/policy.md instead")
    schema.add_argument("--update", type=Path, metavar="FILE",
                        help="with --markdown: rewrite the reference inside FILE")
    for name, text in (("scan", "scan .eml files, directories, mbox or Maildir"),
                       ("quarantine", "list, show, release or purge held messages"),
                       ("warm", "judge mailboxes before their owners' first login"),
                       ("cert", "certificates, expiry and fingerprints to pin in clients"),
                       ("explain", "which listener and user rules, route, upstream and "
                                    "lockout state apply to a user from an address"),
                       ("test-login", "log in to a user's upstream through the policy's route")):
        # Each has its own parser (and --help): main() hands it the rest of the arguments.
        sub.add_parser(name, help=text, add_help=False).add_argument(
            "rest", nargs=argparse.REMAINDER)
    return parser


def _status(server: ProxyServer) -> str:
    """The line ``systemctl status`` shows (STATUS=)."""
    return f"serving: {len(server.ports)} listeners, {server.session_count} sessions"


async def serve(config: Policy, stop: asyncio.Event, config_path: Path | None = None,
                notifier: Notifier | None = None, capture: CaptureOptions | None = None) -> None:
    """Run until ``stop`` is set, then shut down gracefully; tell systemd (``notifier``,
    by default ``$NOTIFY_SOCKET``) when ready, reloading and stopping."""
    notifier = Notifier() if notifier is None else notifier
    demo: DemoUpstream | None = None
    if config.demo_upstream.enabled:
        demo = DemoUpstream()
        await demo.start(config.upstream.host, config.upstream.port)
        log.warning("demo upstream on %s:%d (demo mailbox, see README): not for production",
                    config.upstream.host, demo.port)
    observer = Observer(audit=open_audit_log(config.observability.audit_log))
    server = ProxyServer(config, observer, capture)
    ops: OpsServer | None = None
    if config.observability.metrics_port is not None:
        probe = UpstreamProbe(server, observer.metrics)  # the upstreams of the current policy
        ops = OpsServer(observer.metrics.registry, probe.ready)
        await ops.start(config.observability.metrics_host, config.observability.metrics_port)
        probing = spawn(probe.run(), "upstream-probe")
    if server.server_tls is not None:
        for pair in server.server_tls.pairs:
            print(certificate_line(pair.cert), flush=True)
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGHUP, _reload, server, config_path, notifier)
    # SIGUSR1 (logrotate, nginx's habit): reopen the audit log only, no policy reload.
    loop.add_signal_handler(signal.SIGUSR1, observer.audit.reopen)
    await server.start()
    print("popproxy ready: " + ", ".join(
        f"{lst.name}={lst.host}:{server.ports[lst.name]} ({lst.mode})" for lst in config.listeners
    ), flush=True)
    notifier.ready(_status(server))  # every listener bound, the metrics server up
    status = spawn(report_status(notifier, lambda: _status(server)), "sd-notify-status")
    await stop.wait()
    status.cancel()
    log.info("shutting down")
    notifier.stopping(f"stopping: draining {server.session_count} sessions")
    await server.stop()
    if ops is not None:
        probing.cancel()
        await ops.stop()
    if demo is not None:
        await demo.stop()
    log.info("stopped")  # the journal's last word: a drain that ended, not a crash


def _reload(server: ProxyServer, config_path: Path | None,
            notifier: Notifier | None = None) -> None:
    """SIGHUP: reopen the audit log file (logrotate), validate the policy again and swap it in
    (a bad one keeps the old one), reload the certificates.  A refusal reaches systemd as
    ``STATUS=reload refused: ...`` (systemctl status) and the audit log as a refused
    ``config_reload`` event with the reason."""
    notifier = Notifier(path="") if notifier is None else notifier
    notifier.reloading()
    refused = ""
    try:
        server.observer.audit.reopen()
        refused = _reload_policy(server, config_path)
    finally:
        notifier.reloaded(_status(server), refused)


def _reload_policy(server: ProxyServer, config_path: Path | None) -> str:
    """Apply the policy at ``config_path`` and reload the certificates; "" or why refused."""
    refused = ""
    if config_path is not None:
        try:
            new, findings = load_checked(config_path)  # the schema and every file it names
            for finding in findings:
                log.warning("reload: %s", finding)
        except ConfigError as exc:
            log.error("policy reload refused, keeping the old policy: %s", exc)
            new, refused = None, "; ".join(exc.details)
            server.observer.metrics.config_reloads.labels("policy", "refused").inc()
            server.observer.audit.event("config_reload", None, result="refused",
                                        error=refused)
        if new is not None and new == server.config:
            log.info("policy unchanged: nothing to reload")
            server.observer.metrics.config_reloads.labels("policy", "unchanged").inc()
        elif new is not None and not server.reload_policy(new):
            refused = server.refusal
    if not server.reload_tls(policy_refused=bool(refused)):
        refused = refused or server.refusal
    return refused


async def _main_async(config: Policy, config_path: Path,
                      capture: CaptureOptions | None = None) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await serve(config, stop, config_path, capture=capture)


async def _supervisor_async(config: Policy, config_path: Path, workers: int,
                            options: list[str]) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    db_path = default_db_path(config.state_dir)
    slots = geometry(workers, config.limits.max_sessions)  # what a worker would make
    try:
        release_all_workers(db_path, slots)  # no worker runs yet: no session is held
    except (OSError, SlotTableError) as exc:  # the workers report the table's state too
        log.warning("host file %s: stale session slots not cleared: %s", db_path, exc)
    await serve_workers(config, config_path, workers, options, stop, release_worker=lambda
                        worker_id: release_worker(db_path, worker_id, slots))


def capture_options(directory: Path | None, bodies: bool) -> CaptureOptions | None:
    """``--capture DIR [--capture-bodies]``: the directory is made (0700) before any session."""
    if directory is None:
        if bodies:
            raise ValueError("--capture-bodies needs --capture DIR")
        return None
    options = CaptureOptions(prepare_directory(directory), keep_bodies=bodies)
    log.warning("capturing every session to %s (passwords redacted, message bodies %s)",
                directory, "KEPT" if bodies else "omitted")
    return options


def prepare_state_dir(path: Path) -> None:
    """The state dir holds keys, verdicts, quarantined mail and user names: 0700, also if it
    exists with a wider mode.  Not fatal here: what needs it reports its own error later."""
    try:
        private_dir(path)
    except OSError as exc:
        log.warning("state_dir %s cannot be created: %s", path, exc.strerror or exc)


def resolve_event_loop(name: str) -> str:
    """``auto``: uvloop if it imports (the [uvloop] extra, Linux), else asyncio's loop."""
    if name != "auto":
        return name
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return "asyncio"
    return "uvloop"


def _worker_options(args: argparse.Namespace, event_loop: str) -> list[str]:
    """What every worker is started with besides its sockets (popproxy/proxy/worker.py)."""
    options = ["--event-loop", event_loop, "--log-level", args.log_level]
    if args.capture is not None:
        options += ["--capture", str(args.capture)]
        if args.capture_bodies:
            options.append("--capture-bodies")
    return options


def main(argv: list[str] | None = None) -> int:
    """Every command; a reader that stops reading (``popproxy schema | head``) ends it
    quietly, as other command-line tools do, not with a traceback."""
    try:
        return _command(sys.argv[1:] if argv is None else argv)
    except BrokenPipeError:
        # Python's advice (signal module docs, "Note on SIGPIPE"): point stdout at devnull so
        # the interpreter's own flush at exit does not raise again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


def _command(argv: list[str]) -> int:
    if argv[:1] == ["scan"]:  # these sub-commands own their whole argument list
        from popproxy.scan.cli_scan import main_scan

        return main_scan(argv[1:])
    if argv[:1] == ["quarantine"]:
        from popproxy.quarantine_cli import main_quarantine

        return main_quarantine(argv[1:])
    if argv[:1] == [WORKER_COMMAND]:  # started by the supervisor (workers > 1)
        return main_worker(argv[1:])
    if argv[:1] == ["warm"]:
        from popproxy.warm_cli import main_warm

        return main_warm(argv[1:])
    if argv[:1] == ["cert"]:
        from popproxy.cert_cli import main_cert

        return main_cert(argv[1:])
    if argv[:1] in (["explain"], ["test-login"]):
        from popproxy.explain_cli import main_explain, main_test_login

        return (main_explain if argv[0] == "explain" else main_test_login)(argv[1:])
    args = build_parser().parse_args(argv)
    if args.command in ("schema", "check-config", "check"):
        return offline_command(args)
    return run_command(args)


def run_command(args: argparse.Namespace) -> int:
    """``popproxy run``: one process (workers: 1) or a supervisor and its workers."""
    configure_logging(args.log_level)  # no timestamps under journald ($JOURNAL_STREAM)
    config, problem = startup_problem(args.config)  # policy and every file it names
    if config is None:
        print(f"popproxy: cannot start: {problem}", file=sys.stderr)
        return 2
    prepare_state_dir(config.state_dir)
    try:
        capture = capture_options(args.capture, args.capture_bodies)
    except (OSError, ValueError) as exc:
        print(f"popproxy: --capture: {exc}", file=sys.stderr)
        return 2
    event_loop = resolve_event_loop(args.event_loop)
    try:
        factory = loop_factory(event_loop)
    except ImportError:
        print("popproxy: --event-loop uvloop: uvloop is not installed "
              "(pip install 'popproxy[uvloop]')", file=sys.stderr)
        return 2
    try:
        workers = workers_setting(args.workers, config)
    except ValueError:
        print("popproxy: $POPPROXY_WORKERS: auto or a number >= 1", file=sys.stderr)
        return 2
    try:
        if workers == 1:  # one process, exactly as before workers existed
            run_on(factory, _main_async(config, args.config, capture))
        else:
            run_on(factory, _supervisor_async(config, args.config, workers,
                                              _worker_options(args, event_loop)))
    except (TlsConfigError, OSError, RuntimeError) as exc:
        print(f"popproxy: cannot start: {exc}", file=sys.stderr)
        # A certificate broken since the check above: 2, restarting cannot help; an OSError
        # (a port in use) may pass: 1, systemd restarts.
        return 2 if isinstance(exc, TlsConfigError) else 1
    return 0


def offline_command(args: argparse.Namespace) -> int:
    """``schema`` and ``check-config``: commands that read policies and start nothing."""
    if args.command == "schema":
        if args.markdown or args.update:
            return reference_cli(args.update)
        print(json.dumps(Policy.model_json_schema(), indent=2))
        return 0
    return check_config([*args.paths, *args.config], args.dump, args.files)


def reference_cli(update: Path | None) -> int:
    """``popproxy schema --markdown [--update docs/policy.md]``."""
    from popproxy.policy.reference import markdown, splice

    text = markdown()
    if update is None:
        sys.stdout.write(text)
    else:
        update.write_text(splice(update.read_text(encoding="utf-8"), text), encoding="utf-8")
    return 0
