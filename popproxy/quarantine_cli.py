"""``popproxy quarantine list|show ID|release ID --config POLICY``: the held messages."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from popproxy.policy import ConfigError, load_config
from popproxy.quarantine import QuarantineStore


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="popproxy quarantine")
    parser.add_argument("--config", "-c", type=Path, default=Path("policies"),
                        help="the policy (to find the quarantine directory)")
    sub = parser.add_subparsers(dest="action", required=True)
    sub.add_parser("list", help="list held messages")
    for name, text in (("show", "print a held original"), ("release", "deliver it next time")):
        cmd = sub.add_parser(name, help=text)
        cmd.add_argument("id")
    return parser


def main_quarantine(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"popproxy quarantine: {exc}", file=sys.stderr)
        return 2
    store = QuarantineStore(config.scan.quarantine_dir or config.state_dir / "quarantine")
    try:
        if args.action == "list":
            for held in store.list():
                when = time.strftime("%Y-%m-%d %H:%M", time.gmtime(held.held_at))
                state = "released" if held.released else "held"
                reason = held.reasons[0] if held.reasons else ""
                print(f"{held.id}  {when}  {state:8}  {held.user:20}  {held.score:5.1f}  {reason}")
        elif args.action == "show":
            sys.stdout.buffer.write(store.original(args.id))
        else:
            store.release(args.id)
            print(f"{args.id}: released; the user receives it at the next download")
    except KeyError:
        print(f"popproxy quarantine: no held message {args.id!r}", file=sys.stderr)
        return 1
    return 0
