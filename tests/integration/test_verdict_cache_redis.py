"""The two-level verdict cache against a real Redis: this instance's entries, then the shared ones.

A session-wide throw-away ``redis-server`` (tests/integration/redis_server.py).  The first tests
drive ``VerdictCache`` directly (two caches with their own state files stand for two instances);
the last ones run two proxies on the shared event loop in front of one demo upstream, the way
test_scale_out.py does with real processes behind HAProxy.
"""

from __future__ import annotations

import io
import json
import logging
import re
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest

from popproxy.auditlog import AuditLog
from popproxy.proxy.demo_upstream import DemoUpstream, Mailbox
from popproxy.proxy.observe import Observer
from popproxy.proxy.redis_client import connect_url
from popproxy.proxy.verdict_cache import (
    REDIS_PREFIX,
    RETRY_AFTER,
    CachedVerdict,
    RedisVerdicts,
    VerdictCache,
    cache_key,
    to_record,
)
from popproxy.scan.evidence import Evidence
from tests.helpers import LoopThread, make_config, running_demo, running_proxy
from tests.integration.rawpop import RawPOP3
from tests.integration.redis_server import RedisServer

TTL = 3600
GEN = "settings0feeds0"
KEY = cache_key("default", "Alice@Example.Test", b"uidl-0001", 1234)
VERDICT = CachedVerdict("tag", 7.5, ("link-ip-literal: 198.51.100.7",), 1234, 1_700_000_000.0,
                        GEN, signals=("link-ip-literal",))
KEY_RE = re.compile(rb"popproxy:verdict:[0-9a-f]{32}")
PHISH = (b"From: Security <alert@example.test>\r\nSubject: Verify now\r\n"
         b"Content-Type: text/html\r\n\r\n"
         b'<a href="http://198.51.100.7/login">https://www.paypal.com/</a>\r\n'
         b"<form action=\"http://198.51.100.7/p\"><input type=password></form>\r\n")
CLEAN = b"From: a@example.test\r\nSubject: hello\r\n\r\nJust text.\r\n"


def _collect(results: list[str]) -> Callable[[str, int], None]:
    """A verdict cache's ``on_result`` that lists each result ``count`` times."""
    return lambda result, count: results.extend([result] * count)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Level:
    """One instance's cache, with what it reported (the proxy counts these)."""

    cache: VerdictCache
    results: list[str]
    loop: LoopThread

    def lookup(self, key: str = KEY, generation: str = GEN) -> CachedVerdict | None:
        return self.loop.call(self.cache.lookup(key, generation))

    def store(self, entry: CachedVerdict, key: str = KEY) -> None:
        self.loop.call(self.cache.store(key, entry))


@pytest.fixture
def levels(rds: RedisServer, loop_thread: LoopThread, tmp_path: Path
           ) -> Iterator[tuple[Level, Level, Clock]]:
    """Caches A and B: own state files, one Redis, one (fake) clock for the retry pause."""
    clock = Clock()
    made: list[Level] = []
    for name in ("a", "b"):
        results: list[str] = []
        shared = RedisVerdicts(connect_url(rds.url), TTL)
        cache = VerdictCache(tmp_path / name / "verdicts.jsonl", shared, _collect(results), clock)
        made.append(Level(cache, results, loop_thread))
    try:
        yield made[0], made[1], clock
    finally:
        for level in made:
            loop_thread.call(level.cache.close())


def _stored(rds: RedisServer) -> dict[bytes, tuple[dict[str, Any], int]]:
    """Every verdict key -> (its JSON value, its TTL in seconds)."""
    client = rds.client()
    try:
        out = {}
        for key in client.scan_iter(match=REDIS_PREFIX.encode() + b"*"):
            assert isinstance(key, bytes)
            raw = client.get(key)
            assert isinstance(raw, bytes)
            out[key] = (json.loads(raw), int(client.ttl(key)))
        return out
    finally:
        client.close()


# ------------------------------------------------------------------ evidence (issue 17)
OLD_EVIDENCE_GEN, NEW_EVIDENCE_GEN = "aaaaaaaaaaaa-111111111111", "aaaaaaaaaaaa-222222222222"


def test_a_verdict_of_an_older_feed_is_read_from_redis_stale_with_its_evidence(
        levels: tuple[Level, Level, Clock], rds: RedisServer) -> None:
    a, b, _ = levels
    kept = Evidence((("link-ip-host", "198.51.100.7"),), ("www.example.test",), {"url.count": 1})
    judged = replace(VERDICT, generation=OLD_EVIDENCE_GEN, evidence=kept, mailbox="box")
    a.store(judged)
    assert b.lookup(generation=NEW_EVIDENCE_GEN) == judged  # the caller re-scores it
    assert b.results == ["stale"]
    (value, _), = _stored(rds).values()
    assert value["evidence"]["h"] == ["www.example.test"]


def test_forgetting_unlisted_messages_deletes_their_redis_keys(
        levels: tuple[Level, Level, Clock], rds: RedisServer) -> None:
    a, _, _ = levels
    listed = cache_key("default", "alice", b"uidl-0002", 99)
    a.store(replace(VERDICT, mailbox="box"))
    a.store(replace(VERDICT, mailbox="box"), listed)
    assert len(_stored(rds)) == 2
    assert a.loop.call(a.cache.forget("box", {listed})) == 1
    assert list(_stored(rds)) == [f"{REDIS_PREFIX}{listed}".encode()]


# --------------------------------------------------------------------------- the cache itself
def test_a_verdict_stored_at_one_instance_is_found_at_the_other(
        levels: tuple[Level, Level, Clock], tmp_path: Path) -> None:
    a, b, _ = levels
    assert a.lookup() is None
    a.store(VERDICT)
    assert b.lookup() == VERDICT
    assert b.lookup() == VERDICT  # now from B's own level: no Redis round trip
    assert (a.results, b.results) == (["miss"], ["shared_hit", "local_hit"])
    # B keeps it across a restart, like the verdicts it judged itself.
    restarted = VerdictCache(tmp_path / "b" / "verdicts.jsonl")
    assert restarted.get(KEY) == VERDICT


def test_redis_keys_have_a_ttl_and_no_username(levels: tuple[Level, Level, Clock],
                                               rds: RedisServer) -> None:
    a, _, _ = levels
    a.store(VERDICT)
    stored = _stored(rds)
    assert list(stored) == [f"{REDIS_PREFIX}{KEY}".encode()]
    for key, (value, ttl) in stored.items():
        assert KEY_RE.fullmatch(key), key
        assert TTL - 10 < ttl <= TTL
        assert b"alice" not in key.lower() and "alice" not in json.dumps(value).lower()
        assert value["action"] == "tag" and value["size"] == 1234 and "transient" not in value


def test_transient_verdicts_are_shared_with_nobody(levels: tuple[Level, Level, Clock],
                                                   rds: RedisServer) -> None:
    a, b, _ = levels
    a.store(replace(VERDICT, action="unscanned", transient=True))
    assert _stored(rds) == {}
    assert a.lookup() is None and b.lookup() is None  # judged again, here and there


def test_a_verdict_of_another_generation_is_judged_again(
        levels: tuple[Level, Level, Clock]) -> None:
    a, b, _ = levels
    a.store(VERDICT)
    assert b.lookup(generation="new-feeds") is None
    newer = replace(VERDICT, generation="new-feeds", action="defang", size=1300)
    b.store(newer)
    # A's own entry is of the old generation: it takes B's newer one from Redis.
    assert a.lookup(generation="new-feeds") == newer
    assert a.results == ["shared_hit"] and b.results == ["miss"]


@pytest.mark.parametrize("value", [
    b'{"action": "pass", "from": "another version"}',
    b"not json",
    b"[1, 2]",
    json.dumps({**to_record(VERDICT), "size": "1234"}).encode(),
    json.dumps({**to_record(VERDICT), "action": "deliver-original"}).encode(),
    json.dumps({**to_record(VERDICT), "reasons": [{"x": 1}]}).encode(),
])
def test_an_unreadable_shared_value_is_a_miss(levels: tuple[Level, Level, Clock],
                                              rds: RedisServer, value: bytes) -> None:
    _, b, _ = levels
    client = rds.client()
    try:
        client.set(f"{REDIS_PREFIX}{KEY}", value)
    finally:
        client.close()
    assert b.lookup() is None  # judged here, then overwritten
    assert b.results == ["miss"]


# --------------------------------------------------------------------------- Redis failing
def test_redis_down_falls_back_to_local_verdicts_and_recovers(
        levels: tuple[Level, Level, Clock], rds: RedisServer,
        caplog: pytest.LogCaptureFixture) -> None:
    a, b, clock = levels
    a.store(VERDICT)
    rds.kill()
    caplog.set_level(logging.WARNING, "popproxy.scan")

    started = time.monotonic()
    assert b.lookup() is None  # judge it here
    b.store(VERDICT)
    assert b.lookup() == VERDICT  # B's own level still works
    assert a.lookup() == VERDICT
    assert time.monotonic() - started < 2.0
    assert b.results == ["shared_error", "shared_error", "local_hit"]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "Redis read failed" in warnings[0], warnings

    # Back (empty): the next call after the pause uses Redis again.
    rds.start()
    b.store(replace(VERDICT, score=8.0), key="other")
    assert b.results[-1] == "shared_error" and _stored(rds) == {}  # still pausing
    clock.now += RETRY_AFTER
    b.store(replace(VERDICT, score=8.0), key="other")
    assert list(_stored(rds)) == [f"{REDIS_PREFIX}other".encode()]


def test_a_silent_redis_costs_one_bounded_timeout_per_pause(
        loop_thread: LoopThread, tmp_path: Path) -> None:
    """A Redis that accepts connections and never answers (overloaded, or a dead host behind a
    balancer): the first call gives up within the 1 s bound, the next ones do not wait."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        url = f"redis://127.0.0.1:{silent.getsockname()[1]}/0"
        results: list[str] = []
        shared = RedisVerdicts(connect_url(url), TTL)
        cache = VerdictCache(tmp_path / "v.jsonl", shared, _collect(results))
        level = Level(cache, results, loop_thread)
        try:
            started = time.monotonic()
            assert level.lookup() is None
            first = time.monotonic() - started
            for number in range(20):  # a listing of 20 new messages
                assert level.lookup(key=f"k{number}") is None
                level.store(VERDICT, key=f"k{number}")
            rest = time.monotonic() - started - first
        finally:
            loop_thread.call(cache.close())
    assert first < 1.5, first
    assert rest < 0.5, rest
    assert set(results) == {"shared_error"}


# --------------------------------------------------------------------------- two proxies
@dataclass
class Proxy:
    port: int
    observer: Observer

    def sample(self, name: str, **labels: str) -> float:
        value = self.observer.metrics.registry.get_sample_value(name, labels)
        return 0.0 if value is None else value

    def scanned(self) -> float:
        return sum(self.sample("popproxy_messages_scanned_total", verdict=v, action=a)
                   for v, a in (("clean", "pass"), ("flagged", "tag"), ("flagged", "defang"),
                                ("flagged", "quarantine"), ("unscanned", "unscanned")))

    def cache(self, result: str) -> float:
        return self.sample("popproxy_verdict_cache_total", result=result)

    def session(self) -> tuple[list[int], list[bytes]]:
        """LIST, RETR each, QUIT."""
        with RawPOP3(self.port) as c:
            c.login("u", "p")
            listing = c.command("LIST")
            sizes = [int(line.split()[1]) for line in listing.split(b"\r\n")[1:-2]]
            bodies = []
            for n in range(1, len(sizes) + 1):
                raw = c.command(f"RETR {n}")
                bodies.append(raw.split(b"\r\n", 1)[1][: -len(b".\r\n")])
            assert c.command("QUIT").startswith(b"+OK")
        return sizes, bodies


@pytest.fixture
def proxies(rds: RedisServer, loop_thread: LoopThread, tmp_path: Path
            ) -> Iterator[tuple[Proxy, Proxy]]:
    """Proxies A and B, own state_dirs, one demo upstream; the scan section names no Redis:
    both take lockout.redis_url's."""
    demo = DemoUpstream({b"u": Mailbox(b"p", [CLEAN, PHISH])})
    lockout = {"enabled": True, "redis_url": rds.url}
    scan = {"enabled": True, "thresholds": {"tag": 2, "defang": 1e9, "quarantine": 1e9}}
    with ExitStack() as stack:
        stack.enter_context(running_demo(loop_thread, demo))
        made = []
        for name in ("a", "b"):
            observer = Observer(audit=AuditLog(io.StringIO()))
            config = make_config(demo.port, state_dir=str(tmp_path / name), lockout=lockout,
                                 scan=scan)
            assert config.scan.redis_url == rds.url
            proxy = stack.enter_context(running_proxy(config, loop_thread, observer))
            made.append(Proxy(proxy.port, observer))
        yield made[0], made[1]


def test_an_instance_serves_what_another_judged_without_scanning(
        proxies: tuple[Proxy, Proxy], rds: RedisServer) -> None:
    a, b = proxies
    sizes, bodies = a.session()
    assert a.scanned() == 2 and a.cache("miss") == 2
    assert bodies[0] == CLEAN and bodies[1].startswith(b"X-Popproxy-Verdict: tag")
    assert sizes == [len(body) for body in bodies]
    assert len(_stored(rds)) == 2

    assert b.session() == (sizes, bodies)  # same sizes, same bytes
    assert b.scanned() == 0
    assert b.cache("shared_hit") == 2 and b.cache("miss") == 0
    b.session()  # B's next session: its own level answers
    assert b.cache("local_hit") == 2 and b.cache("shared_hit") == 2 and b.scanned() == 0


def test_without_redis_each_instance_judges_for_itself(proxies: tuple[Proxy, Proxy],
                                                       rds: RedisServer) -> None:
    a, b = proxies
    rds.kill()
    first = a.session()
    assert b.session() == first  # the same scanner: the same verdicts, judged twice
    assert a.scanned() == b.scanned() == 2
    assert b.cache("shared_error") >= 2 and b.cache("shared_hit") == 0


# ------------------------------------------------------------------ batches (a listing)
def test_a_listing_batch_reads_and_writes_redis_in_pipelines(
        levels: tuple[Level, Level, Clock], rds: RedisServer) -> None:
    a, b, _ = levels
    keys = [cache_key("default", "alice", b"uidl-%04d" % n, 100 + n) for n in range(300)]
    entries = [replace(VERDICT, size=100 + n) for n in range(300)]
    client = rds.client()
    try:
        client.set(f"{REDIS_PREFIX}{keys[7]}", b"{damaged")  # overwritten by the batch below
        a.loop.call(a.cache.store_many([(k, e, "") for k, e in zip(keys, entries, strict=True)]))
        stored = _stored(rds)
        client.set(f"{REDIS_PREFIX}{keys[9]}", b"{damaged")  # one unreadable value: a miss
        found = b.loop.call(b.cache.lookup_many([*keys, "never-stored"], GEN))
    finally:
        client.close()
    assert len(stored) == 300 and all(0 < ttl <= TTL for _, ttl in stored.values())
    assert found == {k: e for n, (k, e) in enumerate(zip(keys, entries, strict=True)) if n != 9}
    assert b.results.count("shared_hit") == 299 and b.results.count("miss") == 2
