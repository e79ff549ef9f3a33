"""``popproxy explain`` and ``popproxy test-login``: the policy's answer for one user, and a
real upstream login through the policy's route (like ``doveadm auth test``).

``explain --user U --from IP [--listener L]`` prints the listener's verdict for the address,
the user rule and what it allows per login method, the route and upstream, and the lockout
state of the user, the source and the pair read from the configured store (Redis: URL, Sentinel
or Cluster; with workers and no Redis, the host's SQLite file; the counters of a single process
without Redis live in its memory and cannot be seen from here, and it says so).

``test-login USER [--listener L --from IP]`` reads the password from the terminal (getpass) or
the first line of standard input, and logs in to the routed upstream exactly as the proxy does
(USER, PASS over the upstream's mode and certificate checks), without any client session.  It
prints the route, the upstream and the result, never the password.  Exit 0: logged in; 1:
refused (by the upstream, or by the policy before it); 2: the policy or the upstream is
unusable.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import sys
import time
from pathlib import Path
from typing import TextIO

from popproxy.check_cli import DEFAULT_PATH, default_path_hint
from popproxy.policy import ConfigError, Lockout, Policy, load_config
from popproxy.policy.decisions import parse_address, route_for
from popproxy.policy.explain import UnknownListener, describe, explain
from popproxy.policy.lockout import assess, make_keys
from popproxy.policy.schema_lockout import SECRET_FILE
from popproxy.pop3.events import Command
from popproxy.proxy.host_state import default_db_path
from popproxy.proxy.lockout_store import RedisStore
from popproxy.proxy.redis_client import connect
from popproxy.proxy.store_sqlite import SqliteStore
from popproxy.proxy.supervisor import workers_setting
from popproxy.proxy.tls import upstream_context
from popproxy.proxy.upstream import UpstreamConnection, UpstreamError

DEFAULT_CONFIG = DEFAULT_PATH
DEFAULT_FROM = "127.0.0.1"  # test-login: the address the policy's user rules are asked about


# Each command's --help (the module docstring says the same of both).
EXPLAIN_HELP = """\
explain --user U --from IP [--listener L] prints the listener's verdict for the address, the
user rule and what it allows per login method, the route and upstream, and the lockout state of
the user, the source and the pair read from the configured store (Redis; with workers and no
Redis, the host's SQLite file; a single process without Redis keeps its counters in memory,
which cannot be seen from here: it says so)."""
TEST_LOGIN_HELP = """\
test-login USER [--listener L --from IP] reads the password from the terminal or the first line
of standard input and logs in to the routed upstream exactly as the proxy does (USER, PASS over
the upstream's mode and certificate checks), without a client session.  It prints the route,
the upstream and the result, never the password.  Exit 0: logged in; 1: refused (by the
upstream, or by the policy before it); 2: the policy or the upstream is unusable."""


def _parser(prog: str, login: bool) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=f"popproxy {prog}",
                                     description=TEST_LOGIN_HELP if login else EXPLAIN_HELP,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    if login:
        parser.add_argument("user", help="the user name to log in as")
    else:
        parser.add_argument("--user", "-u", required=True, help="the user name")
    parser.add_argument("--from", dest="source", default=None if not login else DEFAULT_FROM,
                        required=not login, metavar="IP", help="the client address")
    parser.add_argument("--listener", "-l", help="listener name (needed if several)")
    parser.add_argument("--config", "-c", type=Path, default=DEFAULT_CONFIG,
                        help="policy file or directory (default: policies)")
    return parser


def build_explain_parser() -> argparse.ArgumentParser:
    """``popproxy explain``'s parser (also for the man page and completion, cli_doc.py)."""
    return _parser("explain", login=False)


def build_test_login_parser() -> argparse.ArgumentParser:
    """``popproxy test-login``'s parser (also for the man page and completion)."""
    return _parser("test-login", login=True)


def _load(path: Path, err: TextIO) -> Policy | None:
    try:  # the policy only: files this user cannot write (state_dir) do not matter here
        return load_config(path)
    except ConfigError as exc:
        # (each detail names its file already)
        print("popproxy: " + "\n  ".join(d for d in [*exc.details, default_path_hint(path)]
                                         if d), file=err)
        return None


async def lockout_state(settings: Lockout, state_dir: Path, user: str, source: str,
                        now: float | None = None, workers: int = 1) -> str:
    """The lockout line for ``explain``: counts per scope and what the next attempt meets,
    from Redis, or from the host's file when ``workers`` > 1 share one without Redis."""
    if not settings.enabled:
        return "lockout: off"
    host_file = default_db_path(state_dir)
    if settings.redis is None and workers == 1:
        return ("lockout: counters live in the running proxy's memory (one process, no "
                "lockout Redis): not visible from here")
    if settings.redis is None and not host_file.exists():
        return f"lockout: no host file at {host_file} yet, so nothing was ever counted"
    secret_path = settings.secret_file or state_dir / SECRET_FILE
    try:
        secret = secret_path.read_bytes().strip()
    except FileNotFoundError:
        return f"lockout: no key at {secret_path} yet, so nothing was ever counted"
    address = parse_address(source)
    assert address is not None  # checked by the caller
    # With workers and no Redis the counters are the host's file (docs/scaling.md).
    store: SqliteStore | RedisStore = (SqliteStore(host_file) if settings.redis is None
                           else RedisStore(connect(settings.redis)))
    try:
        counts = await store.counts(make_keys(secret, user, address, settings),
                                    time.time() if now is None else now, settings.window)
    finally:
        await store.close()
    verdict = assess(counts, settings)
    state = {"allow": "not locked", "delay": f"delayed {verdict.delay:g} s",
             "block": f"BLOCKED ({verdict.scope})"}[verdict.action]
    trusted = ", not applied: trusted source" if counts.trusted else ""
    return (f"lockout: {state}; failures in the last {settings.window:g} s: pair {counts.pair}"
            f" (limit {settings.pair.block_after}), source {counts.source} (limit "
            f"{settings.source.block_after}), account {counts.account} (limit "
            f"{settings.account.block_after}{trusted})")


def main_explain(argv: list[str], out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> int:
    """``popproxy explain``: 0 if the user may log in (lockouts aside), 1 if not, 2 on error."""
    args = build_explain_parser().parse_args(argv)
    config = _load(args.config, err)
    address = parse_address(args.source)
    if config is None or address is None:
        if address is None:
            print(f"popproxy explain: --from {args.source}: not an IP address", file=err)
        return 2
    try:
        exp = explain(config, args.user, address, args.listener)
    except UnknownListener as exc:
        print(f"popproxy explain: {exc}", file=err)
        return 2
    lines = describe(exp)
    lines.append(asyncio.run(lockout_state(config.lockout, config.state_dir, args.user,
                                           args.source,
                                           workers=workers_setting(None, config))))
    out.write("\n".join(lines) + "\n")
    return 0 if exp.allowed else 1


def read_password(user: str, stdin: TextIO) -> bytes:
    """From the terminal without echo, or the first line of a pipe (its line end cut)."""
    if stdin.isatty():
        return getpass.getpass(f"password for {user}: ").encode()
    return stdin.readline().rstrip("\r\n").encode()


async def upstream_login(config: Policy, user: str, password: bytes) -> str:
    """Log in to ``user``'s upstream as the proxy does; the upstream's answer (no password).

    A successful login ends with QUIT: this is the command's own session, which changed
    nothing (no DELE), so QUIT only logs out cleanly instead of leaving the server to time it
    out.  A proxied session never sends a QUIT its client did not send.
    """
    _, target = route_for(config, user)
    tls = None if target.mode == "plain" else upstream_context(target)
    upstream = await UpstreamConnection.open(target, tls)
    try:
        status = await upstream.status(Command("USER", (user.encode(),)))
        if status.ok:
            status = await upstream.status(Command("PASS", (password,)))
        if status.ok:
            await upstream.status(Command("QUIT"))
        return status.raw.decode("utf-8", "replace").rstrip("\r\n")
    finally:
        upstream.close()


def main_test_login(argv: list[str], stdin: TextIO = sys.stdin, out: TextIO = sys.stdout,
                    err: TextIO = sys.stderr) -> int:
    """``popproxy test-login USER``: 0 logged in, 1 refused, 2 unusable policy or upstream."""
    args = build_test_login_parser().parse_args(argv)
    config = _load(args.config, err)
    address = parse_address(args.source)
    if config is None or address is None:
        return 2
    route, target = route_for(config, args.user)
    print(f"route: {route}\nupstream: {target.host}:{target.port} ({target.mode})", file=out)
    if args.listener is not None:
        try:
            exp = explain(config, args.user, address, args.listener)
        except UnknownListener as exc:
            print(f"popproxy test-login: {exc}", file=err)
            return 2
        policy = [line for line in describe(exp) if line.startswith(("connect:", "login USER"))]
        out.write("\n".join(policy) + "\n")
        if not (exp.connect.allowed and exp.logins["USER"].allowed):
            print("result: refused by the policy (the upstream was not asked)", file=out)
            return 1
    password = read_password(args.user, stdin)
    try:
        reply = asyncio.run(upstream_login(config, args.user, password))
    except (UpstreamError, OSError) as exc:
        print(f"result: upstream unusable: {exc}", file=out)
        return 2
    ok = reply.startswith("+OK")
    print(f"result: {'logged in' if ok else 'refused'}: {reply}", file=out)
    return 0 if ok else 1
