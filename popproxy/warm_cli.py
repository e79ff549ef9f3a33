"""``popproxy warm --config POLICY --user U | --users FILE``: judge mailboxes ahead of login.

A new deployment would otherwise read every message of a mailbox at its owner's first STAT.
Warming logs in to each mailbox with the upstream's master user (warm_login in the policy),
judges every message as a session would and stores the verdicts where the proxy reads them
(Redis, or state_dir's verdict file, which needs the proxy stopped: --offline).  Paced, never
deletes (no DELE; QUIT only after reading).  docs/scanning.md ("Warming") says when to use it.
Exit status: 0 every mailbox warmed (or done before), 1 some failed, 2 a configuration
problem, 130 interrupted (run it again: it resumes).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import TextIO

from popproxy.logsetup import LOG_LEVELS
from popproxy.logsetup import configure as configure_logging
from popproxy.policy import ConfigError, Policy, load_config
from popproxy.proxy.observe import Observer
from popproxy.proxy.scanning import ScanService
from popproxy.proxy.supervisor import workers_value
from popproxy.proxy.warm import Warmer, host_file, refuse_unless_warmable
from popproxy.proxy.warm_progress import Display, Pace, ProgressFile, Totals, read_users
from popproxy.statefiles import private_dir

# Defaults that a legacy server hardly notices: the lab Dovecot lists and sends about 1,000
# small messages/s to one session (docs/scanning.md), so 50/s is a twentieth of one login;
# 5 MB/s (40 Mbit/s) leaves a shared 1 Gbit/s link to the clients.
DEFAULT_MESSAGES_PER_S = 50.0
DEFAULT_OCTETS_PER_S = 5_000_000.0
EXIT_FAILED, EXIT_CONFIG, EXIT_INTERRUPTED = 1, 2, 130


def _rate(text: str) -> float:
    value = float(text)
    if not value >= 0:  # also NaN
        raise argparse.ArgumentTypeError("must be 0 (unlimited) or a positive number")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="popproxy warm", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", "-c", type=Path, required=True,
                        help="the proxy's policy (same file: same verdict generation)")
    who = parser.add_mutually_exclusive_group(required=True)
    who.add_argument("--user", action="append", help="a user to warm (repeatable)")
    who.add_argument("--users", type=Path, metavar="FILE",
                     help="a file with one user per line (# comments allowed)")
    parser.add_argument("--rate", type=_rate, default=DEFAULT_MESSAGES_PER_S,
                        metavar="MSG_PER_S", help="messages downloaded per second at most "
                        f"(default {DEFAULT_MESSAGES_PER_S:g}; 0: unlimited)")
    parser.add_argument("--byte-rate", type=_rate, default=DEFAULT_OCTETS_PER_S,
                        metavar="BYTES_PER_S", help="octets downloaded per second at most "
                        f"(default {DEFAULT_OCTETS_PER_S:g}; 0: unlimited)")
    parser.add_argument("--offline", action="store_true",
                        help="no Redis: fill state_dir's verdict file; every proxy using "
                             "this state_dir must be stopped (it reads the file at start)")
    parser.add_argument("--workers", type=workers_value, default=None,
                        help="as given to popproxy run --workers, if it was: with workers "
                             "the verdicts go to the host file they share (state_dir/"
                             "host.sqlite3), with one process to its verdict file")
    parser.add_argument("--fresh", action="store_true",
                        help="forget which mailboxes earlier runs finished")
    parser.add_argument("--log-level", default="WARNING", type=str.upper, choices=LOG_LEVELS,
                        help="DEBUG, INFO, WARNING (default) or ERROR")
    return parser


def _users(args: argparse.Namespace) -> list[str]:
    if args.users is None:
        return list(args.user)
    with args.users.open(encoding="utf-8") as handle:
        return read_users(handle)


async def warm_all(config: Policy, users: list[str], pace: Pace, fresh: bool,
                   stream: TextIO, workers_flag: str | int | None = None) -> Totals:
    """Warm ``users`` with the proxy's own scan service (worker processes, cache)."""
    private_dir(config.state_dir)
    observer = Observer()
    service = ScanService(config.scan, config.state_dir, observer,
                          host_db=host_file(config, workers_flag))
    try:
        warmer = Warmer(config, service, observer.metrics,
                        ProgressFile(config.state_dir, fresh), Display(stream, stream.isatty()),
                        pace)
        return await warmer.run(users)
    finally:
        await service.aclose()


def main_warm(argv: list[str], stream: TextIO | None = None) -> int:
    stream = sys.stderr if stream is None else stream
    args = build_parser().parse_args(argv)
    configure_logging(args.log_level)
    try:
        users = _users(args)
        config = load_config(args.config)
        refuse_unless_warmable(config, users, args.offline, args.workers)
    except ConfigError as exc:
        print(f"popproxy warm: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except OSError as exc:
        print(f"popproxy warm: --users {args.users}: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_CONFIG
    pace = Pace(args.rate or None, args.byte_rate or None)
    try:
        totals = asyncio.run(warm_all(config, users, pace, args.fresh, stream,
                                      args.workers))
    except KeyboardInterrupt:
        print("\npopproxy warm: interrupted; run the same command again to resume",
              file=sys.stderr)
        return EXIT_INTERRUPTED
    print(f"warmed {totals.users_done - totals.users_failed}/{totals.users} mailboxes: "
          f"{totals.downloaded} messages downloaded, {totals.octets} octets read",
          file=stream)
    return EXIT_FAILED if totals.users_failed else 0
