"""``popproxy warm``: judge mailboxes before their owners' first login through the proxy.

A new deployment in front of a legacy server would otherwise read every message of every
mailbox at each owner's first STAT (docs/scanning.md).  Warming does that judging ahead of
time, paced (``Pace``) so the legacy server is not flooded, and stores the verdicts in the
cache the proxy reads: Redis (``scan.redis_url``, ``redis_sentinel`` or ``redis_cluster``), or
the verdict file in ``state_dir``, which a proxy reads only when it starts (so that form needs
the proxy stopped: ``offline``).

Each mailbox is opened with the upstream's master-user login (``warm_login``, docs/policy.md)
on the upstream the proxy routes its owner to (``route_for``), listed, and judged message by
message through the proxy's own ``MailboxView``: the verdicts, sizes and quarantined originals
are exactly those a session would have made.  Nothing is ever deleted: no DELE is sent, QUIT
only after reading (RFC 1939 section 6: an UPDATE with nothing marked commits nothing), and an
interrupted run closes without QUIT.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any

from prometheus_client import Counter

from popproxy.metrics import Metrics
from popproxy.policy import ConfigError, Policy, Upstream, WarmLogin
from popproxy.policy.decisions import route_for
from popproxy.pop3.events import Command
from popproxy.pop3.limits import MAX_COMMAND_LINE
from popproxy.proxy.host_state import default_db_path
from popproxy.proxy.mailbox import MailboxView
from popproxy.proxy.scanning import ScanService
from popproxy.proxy.supervisor import workers_setting
from popproxy.proxy.tls import upstream_context
from popproxy.proxy.upstream import (
    Connector,
    UpstreamConnection,
    UpstreamError,
    UpstreamFailure,
    read_listing,
)
from popproxy.proxy.upstream_socket import open_channel
from popproxy.proxy.verdict_cache import CACHE_FILE, mailbox_key
from popproxy.proxy.warm_progress import Display, Pace, ProgressFile, Totals

log = logging.getLogger("popproxy.warm")

# A user name from the list must stay one POP3 argument: visible ASCII, no spaces.
USER_NAME = re.compile(r"[!-~]+")


class WarmFailed(Exception):
    """One mailbox could not be warmed (the message says why, without secrets)."""


def host_file(policy: Policy, workers_flag: str | int | None = None) -> Path | None:
    """The host file the proxy's workers share their verdicts in (``workers`` > 1), which
    warm writes to as they do; None for one process (its verdicts.jsonl).  ``workers_flag``:
    ``warm --workers``, to give when the proxy runs with ``run --workers``."""
    workers = workers_setting(workers_flag, policy)  # as ``popproxy run`` counts them
    return default_db_path(policy.state_dir) if workers > 1 else None


def warm_problems(policy: Policy, users: Iterable[str], offline: bool,
                  workers_flag: str | int | None = None) -> list[str]:
    """Why ``warm`` must not run with this policy (empty: it may).  Each problem names the
    setting to change."""
    problems = []
    if not policy.scan.enabled:
        problems.append("scan.enabled is false: the proxy keeps no verdicts to warm")
    # Redis or the workers' host file are read by a running proxy at every lookup.
    if policy.scan.redis is None and host_file(policy, workers_flag) is None and not offline:
        problems.append(
            "scan.redis_url is not set (nor redis_sentinel, redis_cluster): the verdicts would "
            f"go to {policy.state_dir / CACHE_FILE}, which a running proxy read when it started "
            "and will not read again (and may rewrite without them); set scan.redis_url, or "
            "stop the proxy and pass --offline")
    routed = {route_for(policy, user) for user in users}
    for name, target in sorted(routed, key=lambda pair: pair[0]):
        if target.warm_login is None:
            problems.append(f"upstream {name!r} has no warm_login (master user, docs/policy.md)")
        else:
            try:
                read_password(target.warm_login)
            except WarmFailed as exc:
                problems.append(f"upstream {name!r}: {exc}")
    return problems


def read_password(login: WarmLogin) -> bytes:
    """The master password: the file's first line.  Raises WarmFailed (never with the
    password in the message)."""
    try:
        raw = login.password_file.read_bytes()
    except OSError as exc:
        raise WarmFailed(f"warm_login.password_file {login.password_file}: "
                         f"{exc.strerror or exc}") from None
    password = raw.split(b"\n", 1)[0].rstrip(b"\r")
    # "PASS " + password + CRLF must be one command line (RFC 2449 section 4).
    if not password or len(password) + 7 > MAX_COMMAND_LINE or b"\0" in password:
        raise WarmFailed(f"warm_login.password_file {login.password_file}: the first line "
                         "must be the master password (1 to 248 octets, no NUL)")
    return password


def refuse_unless_warmable(policy: Policy, users: Iterable[str], offline: bool,
                           workers_flag: str | int | None = None) -> None:
    """Raises ConfigError with every problem ``warm_problems`` finds."""
    problems = warm_problems(policy, users, offline, workers_flag)
    if problems:
        raise ConfigError(problems)


class _NoClient:
    """Judging writes nothing to a client; a write here would be a bug in MailboxView use."""

    def write(self, data: bytes) -> None:
        raise AssertionError("warm has no client to write to")

    async def drain(self) -> None:
        return None


def _audit(event: str, **fields: Any) -> None:
    # Verdict events of a warm run carry no user (like the cache); a debug line is enough.
    log.debug("warm %s %s", event, fields)


class Warmer:
    """Warms mailboxes one after the other; see the module docstring."""

    def __init__(self, policy: Policy, service: ScanService, metrics: Metrics,
                 progress: ProgressFile, display: Display, pace: Pace,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
                 connect: Connector = open_channel) -> None:
        self._policy = policy
        self._service = service
        self._metrics = metrics
        self._progress = progress
        self._display = display
        self._pace = pace
        self._clock = clock
        self._sleep = sleep
        self._connect = connect
        self.totals = Totals()

    async def run(self, users: list[str]) -> Totals:
        """Warm each user's mailbox; a failure is reported and the next one is warmed."""
        self.totals.users = len(users)
        for index, user in enumerate(users, 1):
            label = f"mailbox {index}/{len(users)}"
            try:
                outcome = await self.warm(user)
            except (WarmFailed, UpstreamError) as exc:
                self.totals.users_failed += 1
                outcome = f"FAILED ({exc})"
            self.totals.users_done += 1
            self._display.mailbox(self.totals, label, outcome)
        return self.totals

    async def warm(self, user: str) -> str:
        """Warm one mailbox (skipped if the progress file has it); what happened, in words."""
        if not USER_NAME.fullmatch(user) or len(user) > 200:
            raise WarmFailed("not a user name POP3 can carry (visible ASCII, no spaces)")
        name, target = route_for(self._policy, user)
        box = mailbox_key(name, user)
        if box in self._progress:
            return "done in an earlier run, skipped"
        up = await self._open(target, name)
        try:
            judged, downloaded = await self._judge_mailbox(up, name, target, user)
        except BaseException:  # also Ctrl-C: close without QUIT, nothing to commit anyway
            up.close()
            raise
        try:
            await up.status(Command("QUIT"))  # after reading only, and no DELE was ever sent
        except UpstreamError:
            pass  # the verdicts are stored; a QUIT answer lost changes nothing
        finally:
            up.close()
        self._progress.record(box)
        return f"{judged} messages judged ({downloaded} downloaded)"

    async def _open(self, target: Upstream, name: str) -> UpstreamConnection:
        tls = None if target.mode == "plain" else upstream_context(target)
        return await UpstreamConnection.open(target, tls, self._connect)

    async def _judge_mailbox(self, up: UpstreamConnection, name: str, target: Upstream,
                             user: str) -> tuple[int, int]:
        await self._login(up, target, name, user)
        sizes = await read_listing(up, "LIST")
        totals = self.totals
        totals.messages, totals.messages_done = len(sizes), 0
        started_with = totals.downloaded
        view = MailboxView(up, _NoClient(), self._service, name, user, _audit, self._metrics)
        try:
            for number in sorted(sizes):
                await self._judge(view, number)
        finally:
            view.close()
        return len(sizes), totals.downloaded - started_with

    async def _login(self, up: UpstreamConnection, target: Upstream, name: str,
                     user: str) -> None:
        login = target.warm_login
        if login is None:  # refuse_unless_warmable checked every routed upstream
            raise WarmFailed(f"upstream {name!r} has no warm_login")
        # One command at a time: the master login is rare, a round trip is nothing here.
        status = await up.status(Command("USER", (login.login_name(user).encode(),)))
        if status.ok:
            status = await up.status(Command("PASS", (read_password(login),)))
        if not status.ok:
            raise WarmFailed(f"upstream {name!r} refused the master login for this user")

    async def _judge(self, view: MailboxView, number: int) -> None:
        await self._sleep(self._pace.wait(self._clock()))
        started = self._clock()
        downloaded, octets = self._read_counts()
        if await view.entry(number) is None:
            raise UpstreamError("a listed message vanished", UpstreamFailure.PROTOCOL)
        now_downloaded, now_octets = self._read_counts()
        self._pace.charge(started, int(now_downloaded - downloaded), int(now_octets - octets))
        totals = self.totals
        totals.downloaded += int(now_downloaded - downloaded)
        totals.octets += int(now_octets - octets)
        totals.messages_done += 1
        self._display.tick(totals)

    def _read_counts(self) -> tuple[float, float]:
        """(messages downloaded to judge, octets read to judge) so far, from the metrics
        MailboxView keeps: only real downloads are paced, cache hits cost the upstream
        nothing.  Read from the two counters alone: collecting the whole registry twice per
        message cost 0.5 ms, seconds over a big mailbox."""
        return (_total(self._metrics.scan_judged, {"how": "downloaded"}),
                _total(self._metrics.scan_judge_bytes, {}))


def _total(counter: Counter, labels: dict[str, str]) -> float:
    return sum(sample.value for family in counter.collect() for sample in family.samples
               if sample.name.endswith("_total") and sample.labels == labels)
