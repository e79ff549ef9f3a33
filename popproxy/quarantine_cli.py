"""``popproxy quarantine list|show ID|release ID|purge --config POLICY``: the held messages.

``list`` prints a header line and one line per message (filters: ``--user``, ``--since``,
``--reason``); ``purge`` removes messages held longer than ``--older-than`` or, without it,
the policy's ``scan.quarantine_retention``.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from popproxy.check_cli import DEFAULT_PATH, default_path_hint
from popproxy.policy import ConfigError, load_config
from popproxy.policy.durations import parse_duration
from popproxy.quarantine import HeldMessage, QuarantineStore

# Columns of `list` cut to these widths (the whole values are in `show` and the JSON files).
USER_WIDTH = 24
FROM_WIDTH = 30
SUBJECT_WIDTH = 40
EXIT_OK, EXIT_NOT_FOUND, EXIT_USAGE = 0, 1, 2


def _since(text: str) -> float:
    """``--since``: a date (``2026-12-01``, ``2026-12-01T08:00``, UTC) or a duration back
    from now (``7d``)."""
    try:
        return time.time() - parse_duration(text)
    except ValueError:
        pass
    try:
        return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r}: a date (2026-12-01, 2026-12-01T08:00, UTC) or a duration (7d)"
        ) from None


def _duration(text: str) -> float:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="popproxy quarantine")
    parser.add_argument("--config", "-c", type=Path, default=DEFAULT_PATH,
                        help="the policy (to find the quarantine directory)")
    sub = parser.add_subparsers(dest="action", required=True)
    listing = sub.add_parser("list", help="list held messages, oldest first")
    listing.add_argument("--user", help="only those that reached this user (any upstream)")
    listing.add_argument("--since", type=_since, metavar="DATE|DURATION",
                         help="only those held since (2026-12-01, or 7d back from now)")
    listing.add_argument("--reason", help="only those with a reason containing this text")
    for name, text in (("show", "print a held original"), ("release", "deliver it next time")):
        cmd = sub.add_parser(name, help=text)
        cmd.add_argument("id")
    purge = sub.add_parser("purge", help="remove held messages older than a duration")
    purge.add_argument("--older-than", type=_duration, metavar="DURATION",
                       help="e.g. 30d (default: the policy's scan.quarantine_retention)")
    return parser


def _matches(args: argparse.Namespace) -> Callable[[HeldMessage], bool]:
    user = args.user.casefold() if args.user else None
    reason = args.reason.casefold() if args.reason else None

    def match(held: HeldMessage) -> bool:
        if user is not None and all(u.casefold() != user for u, _ in held.everyone):
            return False
        if args.since is not None and held.held_at < args.since:
            return False
        return reason is None or any(reason in r.casefold() for r in held.reasons)
    return match


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "~"


def _list(store: QuarantineStore, args: argparse.Namespace) -> None:
    print(f"{'ID':<16}  {'HELD (UTC)':<16}  {'STATE':<8}  {'SCORE':>5}  {'USERS':<{USER_WIDTH}}"
          f"  {'FROM':<{FROM_WIDTH}}  {'SUBJECT':<{SUBJECT_WIDTH}}  REASONS")
    for held in filter(_matches(args), store.list()):
        when = time.strftime("%Y-%m-%d %H:%M", time.gmtime(held.held_at))
        state = "released" if held.released else "held"
        users = ",".join(sorted({u for u, _ in held.everyone}))
        print(f"{held.id:<16}  {when:<16}  {state:<8}  {held.score:>5.1f}  "
              f"{_cut(users, USER_WIDTH):<{USER_WIDTH}}  "
              f"{_cut(held.sender or '-', FROM_WIDTH):<{FROM_WIDTH}}  "
              f"{_cut(held.subject or '-', SUBJECT_WIDTH):<{SUBJECT_WIDTH}}  "
              f"{'; '.join(held.reasons) or '-'}")


def main_quarantine(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"popproxy quarantine: {exc}", file=sys.stderr)
        if hint := default_path_hint(args.config):
            print(f"  {hint}", file=sys.stderr)
        return EXIT_USAGE
    store = QuarantineStore(config.scan.quarantine_dir or config.state_dir / "quarantine")
    try:
        if args.action == "list":
            _list(store, args)
        elif args.action == "show":
            sys.stdout.buffer.write(store.original(args.id))
        elif args.action == "release":
            store.release(args.id)
            print(f"{args.id}: released; the user receives it at the next download")
        else:
            older = args.older_than or config.scan.quarantine_retention
            if older is None:
                print("popproxy quarantine purge: give --older-than (the policy sets no "
                      "scan.quarantine_retention)", file=sys.stderr)
                return EXIT_USAGE
            removed = store.purge(older, time.time())
            print(f"{len(removed)} held messages removed")
    except KeyError:
        print(f"popproxy quarantine: no held message {args.id!r}", file=sys.stderr)
        return EXIT_NOT_FOUND
    return EXIT_OK
