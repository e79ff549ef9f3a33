"""lockout/scan ``redis_url``, ``redis_sentinel``, ``redis_cluster``: forms, checks with
FILE:LINE, one at a time, scan taking lockout's, passwords never shown."""

from __future__ import annotations

from pathlib import Path

import pytest

from popproxy.policy import ConfigError, Policy, load_config
from popproxy.policy.schema_redis import (
    RedisCluster,
    RedisSentinel,
    RedisUrl,
    split_host_port,
)

LISTENER = "listeners:\n  - {name: a, port: 1995, mode: tls}\n"
SENTINEL = ("  redis_sentinel:\n"
            "    sentinels: ['10.0.7.31:26379', '10.0.7.32:26379', '[2001:db8::33]:26379']\n"
            "    service: popproxy\n"
            "    password: s3cret\n"
            "    sentinel_password: s3ntinel\n"
            "    db: 2\n")
CLUSTER = "  redis_cluster:\n    nodes: ['10.0.8.1:7000', 'redis-2.example:7001']\n    tls: true\n"


def _load(tmp_path: Path, text: str) -> Policy:
    path = tmp_path / "policy.yaml"
    path.write_text(LISTENER + text)
    return load_config(path)


def _error(tmp_path: Path, text: str) -> str:
    path = tmp_path / "policy.yaml"
    path.write_text(LISTENER + text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    (detail,) = info.value.details
    return detail.replace(str(path), "FILE")


def test_sentinel_settings_are_read_and_scan_takes_them(tmp_path: Path) -> None:
    config = _load(tmp_path, "lockout:\n" + SENTINEL)
    target = config.lockout.redis
    assert isinstance(target, RedisSentinel)
    assert target.sentinels[2] == "[2001:db8::33]:26379"
    assert (target.service, target.db, target.tls) == ("popproxy", 2, False)
    assert target.password is not None and target.password.get_secret_value() == "s3cret"
    assert config.scan.redis == target  # no Redis of its own: the lockout one


def test_cluster_settings_are_read(tmp_path: Path) -> None:
    config = _load(tmp_path, "scan:\n" + CLUSTER)
    target = config.scan.redis
    assert isinstance(target, RedisCluster)
    assert target.nodes == ("10.0.8.1:7000", "redis-2.example:7001") and target.tls
    assert config.lockout.redis is None  # scan's Redis is never taken by lockout


def test_a_scan_redis_of_its_own_wins_over_the_lockout_sentinel(tmp_path: Path) -> None:
    config = _load(tmp_path, "lockout:\n" + SENTINEL + "scan:\n" + CLUSTER)
    assert isinstance(config.lockout.redis, RedisSentinel)
    assert isinstance(config.scan.redis, RedisCluster)
    assert config.scan.redis_sentinel is None


def test_redis_url_is_still_a_url_target(tmp_path: Path) -> None:
    config = _load(tmp_path, "lockout: {redis_url: 'redis://10.0.7.30/0'}\n")
    assert config.scan.redis == config.lockout.redis == RedisUrl(url="redis://10.0.7.30/0")


def test_passwords_are_not_shown_in_the_policy(tmp_path: Path) -> None:
    config = _load(tmp_path, "lockout:\n" + SENTINEL)
    shown = repr(config) + str(config.model_dump(mode="json"))
    assert "s3cret" not in shown and "s3ntinel" not in shown
    assert "**********" in shown


def test_two_redis_forms_at_once_are_refused(tmp_path: Path) -> None:
    detail = _error(tmp_path, "lockout:\n  redis_url: 'redis://10.0.7.30/0'\n" + SENTINEL)
    assert detail == ("FILE:3: lockout: set one of redis_url, redis_sentinel, "
                      "redis_cluster, not redis_url and redis_sentinel")


@pytest.mark.parametrize(("node", "why"), [
    ("10.0.7.31", "must be host:port"),
    ("10.0.7.31:0", "must be host:port"),
    ("10.0.7.31:65536", "must be host:port"),
    ("2001:db8::31:26379", "must be host:port"),
    ("[2001:db8::31:26379", "must be in brackets"),
    ("[not-v6]:26379", "IPv6"),
])
def test_a_bad_sentinel_address_is_refused_with_file_line_and_key(
        tmp_path: Path, node: str, why: str) -> None:
    detail = _error(tmp_path, f"lockout:\n  redis_sentinel:\n    service: s\n"
                              f"    sentinels:\n      - '{node}'\n")
    assert detail.startswith("FILE:7: lockout.redis_sentinel.sentinels.0: ")
    assert why in detail


@pytest.mark.parametrize(("body", "key"), [
    ("    sentinels: []\n    service: s\n", "lockout.redis_sentinel.sentinels"),
    ("    sentinels: ['h:1']\n", "lockout.redis_sentinel.service"),
    ("    sentinels: ['h:1']\n    service: s\n    db: 16\n", "lockout.redis_sentinel.db"),
    ("    sentinels: ['h:1']\n    service: s\n    master: m\n", "lockout.redis_sentinel.master"),
])
def test_incomplete_sentinel_settings_are_refused(tmp_path: Path, body: str, key: str) -> None:
    detail = _error(tmp_path, "lockout:\n  redis_sentinel:\n" + body)
    assert detail.split(": ")[1] == key


def test_an_empty_cluster_is_refused(tmp_path: Path) -> None:
    detail = _error(tmp_path, "scan:\n  redis_cluster: {nodes: []}\n")
    assert detail.startswith("FILE:4: scan.redis_cluster.nodes: ")


def test_split_host_port() -> None:
    assert split_host_port("10.0.7.31:26379") == ("10.0.7.31", 26379)
    assert split_host_port("[2001:db8::31]:7000") == ("2001:db8::31", 7000)
    assert split_host_port("redis-1.example:6379") == ("redis-1.example", 6379)
