"""``popproxy scan PATH...``: scan .eml files, directories, mbox files and Maildirs.

Exit status: 0 when nothing is flagged, 1 when some message is flagged (its action is not
"pass"), 2 when a path could not be read (this wins over 1, so scripts notice missing input),
141 when the reader of the output went away (a closed pipe, as for a tool ended by SIGPIPE).

``--config POLICY`` scans with the policy's ``scan`` section (thresholds, feeds, size cap,
combiner) and reports what the proxy would deliver (``action``: after ``fail_mode`` /
``fail_open_action`` and the size cap, :func:`popproxy.scan.verdict.delivered_action`); without
it, the scanner's defaults and the policy defaults for those.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Protocol, TextIO

from popproxy.policy import ConfigError, load_config
from popproxy.policy.schema_scan import Scan
from popproxy.scan.explain import explain_lines, explain_record
from popproxy.scan.feeds import load_feeds
from popproxy.scan.scanner import Scanner
from popproxy.scan.settings import ScanSettings, Thresholds
from popproxy.scan.sources import Item, iter_items
from popproxy.scan.verdict import Verdict, delivered_action

EXIT_CLEAN = 0
EXIT_FLAGGED = 1
EXIT_ERROR = 2
# The reader of stdout went away: 128 + SIGPIPE, the status a shell reports for a tool the
# signal ended (``yes | head -1``).
EXIT_PIPE_CLOSED = 128 + 13

# Width of the reasons column in the table; the full list is in --json output.
_REASONS_WIDTH = 70
# Redraw the progress line at most this often (seconds): redrawing per message would cost more
# than scanning small messages.
_PROGRESS_INTERVAL = 0.1


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``popproxy scan``."""
    parser = argparse.ArgumentParser(
        prog="popproxy scan",
        description="Scan messages (.eml files, directories, mbox files, Maildirs) for phishing.",
    )
    parser.add_argument("paths", nargs="+", metavar="PATH", help="message file, directory, mbox")
    parser.add_argument(
        "--config", "-c", type=Path, metavar="POLICY",
        help="use this policy's scan settings (thresholds, feeds, size cap, fail mode): the "
        "action column is what the proxy would do",
    )
    parser.add_argument("--json", action="store_true", help="one JSON object per message")
    parser.add_argument(
        "--feed", action="append", default=[], metavar="FILE", help="blocklist host file"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    parser.add_argument(
        "--explain", action="store_true",
        help="each signal with its evidence and its part in the score (strongest per group "
        "counts, the others are shown as shadowed); with --json, an \"explain\" list",
    )
    return parser


def main_scan(argv: list[str]) -> int:
    """Run ``popproxy scan`` with ``argv`` (without the program and sub-command names).

    A reader that goes away (``popproxy scan --json ... | head -1``) ends the scan quietly
    with EXIT_PIPE_CLOSED, as a Unix tool killed by SIGPIPE would, not with a traceback.
    """
    args = build_parser().parse_args(argv)
    try:
        status = _run(args)
        sys.stdout.flush()  # inside the try: a closed pipe shows on the last flush too
    except BrokenPipeError:
        _discard_stdout()
        return EXIT_PIPE_CLOSED
    return status


def _discard_stdout() -> None:
    """Point stdout at /dev/null, so the interpreter's flush at exit finds no closed pipe.

    The recipe of the Python documentation (signal module, "Note on SIGPIPE"); stdout
    without a file descriptor (a test's capture buffer) has nothing left to flush there.
    """
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, io.UnsupportedOperation):
        pass


def _policy(path: Path | None) -> Scan | None:
    """The policy's scan section (the defaults without ``path``); None when it is refused."""
    if path is None:
        return Scan()
    try:
        policy = load_config(path).scan
    except ConfigError as exc:
        print(f"popproxy scan: {exc}", file=sys.stderr)
        return None
    if not policy.enabled:
        print("popproxy scan: scanning is off in this policy: the proxy delivers every message "
              "as it is; shown is what it would do with scan.enabled: true", file=sys.stderr)
    return policy


def _run(args: argparse.Namespace) -> int:
    policy = _policy(args.config)
    if policy is None:
        return EXIT_ERROR
    config = policy.to_settings() if args.config is not None else ScanSettings()
    try:
        feeds = load_feeds([*config.feed_paths, *(Path(f) for f in args.feed)])
    except OSError as exc:
        print(f"popproxy scan: cannot read feed {exc.filename}: {exc.strerror}", file=sys.stderr)
        return EXIT_ERROR
    scanner = Scanner(config, feeds=feeds)
    # The explanation is long: a progress line redrawn between its blocks would garble them.
    show_progress = sys.stderr.isatty() and not args.no_progress and not args.explain
    report: _Report
    if args.json:
        report = _JsonReport(sys.stdout, explain=args.explain)
    elif args.explain:
        report = _ExplainReport(sys.stdout, config.thresholds)
    else:
        report = _TableReport(sys.stdout)
    progress = _Progress(sys.stderr, time.monotonic) if show_progress else None
    errors = flagged = 0
    for item in iter_items(args.paths):
        if item.data is None:
            errors += 1
            report.error(item)
        else:
            verdict = scanner.scan(item.data)
            flagged += verdict.flagged
            too_large = len(item.data) > config.max_message_bytes
            action = delivered_action(verdict, policy.fail_mode, policy.fail_open_action,
                                      too_large)
            report.verdict(item, verdict, action)
        if progress is not None:
            progress.tick(item.path)
    if progress is not None:
        progress.done()
    report.close(flagged, errors)
    if errors:
        return EXIT_ERROR
    return EXIT_FLAGGED if flagged else EXIT_CLEAN


class _Report(Protocol):
    # action: what the proxy would deliver (verdict.delivered_action)
    def verdict(self, item: Item, verdict: Verdict, action: str) -> None: ...
    def error(self, item: Item) -> None: ...
    def close(self, flagged: int, errors: int) -> None: ...


class _JsonReport:
    def __init__(self, out: TextIO, *, explain: bool = False) -> None:
        self._out = out
        self._explain = explain

    def verdict(self, item: Item, verdict: Verdict, action: str) -> None:
        record = {
            "path": item.path,
            "verdict": verdict.action,
            "action": action,
            "flagged": verdict.flagged,
            "score": verdict.score,
            "reasons": list(verdict.reasons),
            "signals": [s.name for s in verdict.signals],
        }
        if verdict.cause is not None:
            record["cause"] = verdict.cause
        if self._explain:
            record["explain"] = explain_record(verdict)
        print(json.dumps(record), file=self._out)

    def error(self, item: Item) -> None:
        record = {"path": item.path, "verdict": "error", "flagged": False, "score": 0.0,
                  "reasons": [], "error": item.error}
        print(json.dumps(record), file=self._out)

    def close(self, flagged: int, errors: int) -> None:
        self._out.flush()


class _TableReport:
    def __init__(self, out: TextIO) -> None:
        self._out = out
        self._count = 0
        print(f"{'VERDICT':<11} {'ACTION':<10} {'SCORE':>6}  {'PATH':<40}  REASONS", file=out)

    def verdict(self, item: Item, verdict: Verdict, action: str) -> None:
        self._count += 1
        reasons = "; ".join(verdict.reasons)
        if len(reasons) > _REASONS_WIDTH:
            reasons = reasons[: _REASONS_WIDTH - 3] + "..."
        row = f"{verdict.action:<11} {action:<10} {verdict.score:>6.1f}  {item.path:<40}  {reasons}"
        print(row, file=self._out)

    def error(self, item: Item) -> None:
        self._count += 1
        print(f"{'ERROR':<11} {'':<10} {'':>6}  {item.path:<40}  {item.error}", file=self._out)

    def close(self, flagged: int, errors: int) -> None:
        print(f"\n{self._count} scanned, {flagged} flagged, {errors} errors", file=self._out)


class _ExplainReport:
    """One block per message: the verdict, then each signal with its evidence."""

    def __init__(self, out: TextIO, thresholds: Thresholds) -> None:
        self._out = out
        self._thresholds = thresholds
        self._count = 0

    def verdict(self, item: Item, verdict: Verdict, action: str) -> None:
        self._count += 1
        lines = explain_lines(item.path, verdict, self._thresholds)
        lines.insert(1, f"  the proxy would deliver it: {action}")
        print("\n".join(lines) + "\n", file=self._out)

    def error(self, item: Item) -> None:
        self._count += 1
        print(f"{item.path}\n  error: {item.error}\n", file=self._out)

    def close(self, flagged: int, errors: int) -> None:
        print(f"{self._count} scanned, {flagged} flagged, {errors} errors", file=self._out)


class _Progress:
    """A one-line counter on a terminal, redrawn in place."""

    def __init__(self, out: TextIO, clock: Callable[[], float]) -> None:
        self._out = out
        self._clock = clock
        self._count = 0
        self._last = 0.0

    def tick(self, path: str) -> None:
        self._count += 1
        now = self._clock()
        if now - self._last >= _PROGRESS_INTERVAL:
            self._last = now
            self._out.write(f"\r\x1b[K[{self._count}] {path[-60:]}")
            self._out.flush()

    def done(self) -> None:
        self._out.write(f"\r\x1b[K[{self._count}] done\n")
        self._out.flush()
