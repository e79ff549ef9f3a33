"""Policy directories: files merged with duplicate detection, errors with file:line:key."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from popproxy.policy import ConfigError, load_config

REPO = Path(__file__).resolve().parents[2]


def _files(tmp_path: Path, **files: str) -> Path:
    for name, text in files.items():
        (tmp_path / f"{name}.yaml").write_text(text)
    return tmp_path


def _error(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config(path)
    return info.value.details


def test_directory_files_are_merged_in_name_order(tmp_path: Path) -> None:
    path = _files(
        tmp_path,
        a_listeners="listeners:\n  - {name: pop3s, port: 1995, mode: tls}\n",
        b_more="listeners:\n  - {name: pop3, port: 1110, mode: starttls}\n"
               "upstreams:\n  legacy: {host: 127.0.0.1, port: 2110}\n"
               "routes:\n  - {match: '*@legacy.example', upstream: legacy}\n",
        c_users="users:\n  - {match: alice, allow: ['10.0.0.0/8']}\n",
    )
    config = load_config(path)
    assert [lst.name for lst in config.listeners] == ["pop3s", "pop3"]
    assert set(config.upstreams) == {"legacy"}
    assert config.routes[0].upstream == "legacy"
    assert str(config.users[0].allow[0]) == "10.0.0.0/8"


def test_error_in_second_file_names_that_file_and_line(tmp_path: Path) -> None:
    path = _files(
        tmp_path,
        a="listeners:\n  - {name: a, port: 1995, mode: tls}\n",
        b="# comment\nlisteners:\n  - name: b\n    port: 1110\n    allow: ['10.0.0.0/33']\n",
    )
    (detail,) = _error(path)
    assert detail.startswith(f"{tmp_path / 'b.yaml'}:5: listeners.0.allow.0: ")
    assert "network" in detail


def test_section_in_two_files_is_refused(tmp_path: Path) -> None:
    path = _files(
        tmp_path,
        a="listeners: [{name: a, port: 1995, mode: tls}]\nlimits: {max_sessions: 5}\n",
        b="\nlimits: {max_sessions: 6}\n",
    )
    assert _error(path) == [
        f"{tmp_path / 'b.yaml'}:2: limits: also defined at {tmp_path / 'a.yaml'}:2 "
        "(a section may appear once)"
    ]


def test_duplicate_upstream_name_across_files(tmp_path: Path) -> None:
    path = _files(
        tmp_path,
        a="listeners: [{name: a, port: 1995, mode: tls}]\nupstreams:\n  x: {port: 1}\n",
        b="upstreams:\n  x: {port: 2}\n",
    )
    assert _error(path) == [
        f"{tmp_path / 'b.yaml'}:2: upstreams.x: also defined at {tmp_path / 'a.yaml'}:3"
    ]


def test_duplicate_yaml_key_in_one_file(tmp_path: Path) -> None:
    path = _files(tmp_path, a="listeners:\n  - name: a\n    port: 1995\n    port: 1996\n")
    assert _error(path) == [f"{tmp_path / 'a.yaml'}:4: listeners.0.port: duplicate key"]


def test_duplicate_listener_port(tmp_path: Path) -> None:
    path = _files(tmp_path, a="listeners:\n  - {name: a, port: 1995, mode: tls}\n"
                              "  - {name: b, port: 1995, mode: starttls}\n")
    (detail,) = _error(path)
    assert detail == (f"{tmp_path / 'a.yaml'}:3: listeners.1.port: 127.0.0.1 port 1995 "
                      "already used by listeners.0")


def test_wrong_type(tmp_path: Path) -> None:
    path = _files(tmp_path, a="listeners: [{name: a, port: 1995, mode: tls}]\n"
                              "limits:\n  max_sessions: many\n")
    (detail,) = _error(path)
    assert detail.startswith(f"{tmp_path / 'a.yaml'}:3: limits.max_sessions: Input should be")


@pytest.mark.parametrize(
    ("rules", "message"),
    [
        ("  - {match: '*'}\n  - {match: alice}\n",
         ":4: users.1.match: 'alice' can never match: users.0 ('*') matches first"),
        ("  - {match: alice}\n  - {match: alice, require_tls: true}\n",
         ":4: users.1.match: 'alice' can never match: users.0 ('alice')"),
        ("  - {match: '*@corp.example'}\n  - {match: bob@Corp.Example}\n",
         ":4: users.1.match: 'bob@Corp.Example' can never match"),
    ],
)
def test_user_rule_that_can_never_match(tmp_path: Path, rules: str, message: str) -> None:
    path = _files(tmp_path, a="listeners: [{name: a, port: 1995, mode: tls}]\nusers:\n" + rules)
    (detail,) = _error(path)
    assert message in detail
    assert detail.startswith(f"{tmp_path / 'a.yaml'}:")


def test_route_to_unknown_upstream(tmp_path: Path) -> None:
    path = _files(tmp_path, a="listeners: [{name: a, port: 1995, mode: tls}]\n"
                              "routes:\n  - {match: '*@x.example', upstream: nowhere}\n")
    (detail,) = _error(path)
    assert detail == (f"{tmp_path / 'a.yaml'}:3: routes.0.upstream: unknown upstream "
                      "'nowhere'; known: default")


def test_schema_errors_and_rules_across_entries_are_reported_in_one_run(
        tmp_path: Path) -> None:
    """Regression (admin review): a duplicate listener name showed only once the schema
    passed, so fixing a typo elsewhere revealed a second round of errors."""
    path = _files(tmp_path, a="listeners:\n  - {name: a, port: 1995, mode: tls}\n"
                              "  - {name: a, port: 1996, mode: tls}\n"
                              "upstreams: {legacy: {host: mail.example, port: 0}}\n"
                              "routes: [{match: bob, upstream: legacy}]\n"
                              "limits:\n  max_sessions: many\n")
    where = tmp_path / "a.yaml"
    details = _error(path)
    assert [d.split(": ")[1] for d in details] == [  # the schema's first
        "upstreams.legacy.port", "limits.max_sessions", "listeners.1.name"]
    assert details[2] == (f"{where}:3: listeners.1.name: listener name 'a' already used by "
                          "listeners.0")


def test_a_section_with_its_own_errors_is_left_out_of_the_rules_across_entries(
        tmp_path: Path) -> None:
    path = _files(tmp_path, a="listeners:\n  - {name: a, port: 1995, mode: tls}\n"
                              "  - {name: a, port: 0, mode: tls}\n"
                              "upstreams: [legacy]\n"
                              "routes: [{match: bob, upstream: legacy}]\n")
    # Neither "listener name 'a' already used" nor "unknown upstream 'legacy'": the listeners
    # and upstreams are wrong in themselves, and said so.
    assert [d.split(": ")[1] for d in _error(path)] == ["listeners.1.port", "upstreams"]


def test_proxy_protocol_needs_trusted_networks(tmp_path: Path) -> None:
    path = _files(tmp_path, a="listeners:\n  - name: a\n    port: 1995\n    mode: tls\n"
                              "    proxy_protocol: {trusted: []}\n")
    (detail,) = _error(path)
    assert detail.startswith(f"{tmp_path / 'a.yaml'}:5: listeners.0.proxy_protocol.trusted:")


def test_empty_directory(tmp_path: Path) -> None:
    assert _error(tmp_path) == [f"{tmp_path}: no *.yaml files found"]


def test_shipped_policies_pass_check_config() -> None:
    """The default passes the file checks too; the examples name certificates in /etc that
    exist only where they are deployed, so they are checked with --no-files."""
    result = subprocess.run([sys.executable, "-m", "popproxy", "check-config",
                             str(REPO / "policies")], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    examples = sorted((REPO / "policies" / "examples").glob("*.yaml"))
    result = subprocess.run([sys.executable, "-m", "popproxy", "check-config", "--no-files",
                             *map(str, examples)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count(": OK (") == len(examples)


def test_check_config_exits_1_on_any_bad_policy(tmp_path: Path) -> None:
    good = REPO / "policies" / "default.yaml"
    bad = _files(tmp_path, bad="listeners: [{name: a, port: 1995, mode: tls, extra: 1}]\n")
    result = subprocess.run([sys.executable, "-m", "popproxy", "check-config", str(good),
                             str(bad)], capture_output=True, text=True)
    assert result.returncode == 1
    assert f"{bad / 'bad.yaml'}:1: listeners.0.extra: unknown key; valid keys here: name, host" in (
        result.stderr
    )


def test_schema_command_prints_json_schema() -> None:
    result = subprocess.run([sys.executable, "-m", "popproxy", "schema"],
                            capture_output=True, text=True, check=True)
    schema = json.loads(result.stdout)
    assert "listeners" in schema["properties"]
    assert schema["additionalProperties"] is False
