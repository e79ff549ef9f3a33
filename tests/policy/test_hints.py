"""Config errors name the value and the fix (issue 19 item 3): hints.py, through the loader."""

from __future__ import annotations

from pathlib import Path

import pytest

from popproxy.policy import ConfigError, Policy, load_config
from popproxy.policy.hints import closest_key, key_path, parse_network, valid_keys


def _details(tmp_path: Path, text: str) -> list[str]:
    path = tmp_path / "policy.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    return [detail.removeprefix(f"{path}:") for detail in info.value.details]


def test_a_cidr_with_host_bits_names_the_value_and_the_network_meant(tmp_path: Path) -> None:
    details = _details(tmp_path, "listeners:\n  - name: a\n    port: 1995\n"
                                 "    allow: [10.0.0.0/8, 10.0.0.1/24]\n")
    assert details == ["4: listeners.0.allow.1: 10.0.0.1/24: host bits set, "
                       "did you mean 10.0.0.0/24"]


def test_a_value_that_is_no_network_names_itself_and_an_example(tmp_path: Path) -> None:
    (detail,) = _details(tmp_path, "listeners: [{name: a, port: 1995}]\n"
                                   "users: [{match: bob, allow: [intranet]}]\n")
    assert detail.startswith("2: users.0.allow.0: intranet: not an IP network (")
    assert detail.endswith("write e.g. 192.0.2.0/24, 192.0.2.7 or 2001:db8::/32")


def test_one_value_where_a_list_belongs_says_how_to_write_the_list(tmp_path: Path) -> None:
    """Regression: "Input should be a valid tuple" (pydantic's words; YAML has lists)."""
    (detail,) = _details(tmp_path, "listeners: [{name: a, port: 1995}]\n"
                                   "users: [{match: bob, allow: 127.0.0.0/8}]\n")
    assert detail == ("2: users.0.allow: a list is needed, e.g. [127.0.0.0/8] or one item "
                      "per '- ' line (got '127.0.0.0/8')")


def test_parse_network_keeps_good_networks_and_non_strings() -> None:
    assert str(parse_network(" 2001:db8::/32")) == "2001:db8::/32"
    assert str(parse_network("192.0.2.7")) == "192.0.2.7/32"
    assert parse_network(7) == 7  # pydantic's own check reports it
    with pytest.raises(ValueError, match="2001:db8::1/32: host bits set, did you mean "
                                         "2001:db8::/32"):
        parse_network("2001:db8::1/32")


@pytest.mark.parametrize(("text", "expected"), [
    ("listeners: [{name: a, port: 1995}]\nlimts: {}\n", "2: limts: unknown key, did you mean "
                                                        "'limits'?"),
    ("listeners: [{name: a, prot: 1995, port: 1}]\n",
     "1: listeners.0.prot: unknown key, did you mean 'port'?"),
    ("listeners: [{name: a, port: 1}]\nupstreams: {old: {hots: x}}\n",
     "2: upstreams.old.hots: unknown key, did you mean 'host'?"),
    ("listeners: [{name: a, port: 1}]\nscan: {thresholds: {quarantin: 9}}\n",
     "2: scan.thresholds.quarantin: unknown key, did you mean 'quarantine'?"),
])
def test_an_unknown_key_suggests_the_closest_valid_key_of_its_section(
        tmp_path: Path, text: str, expected: str) -> None:
    assert _details(tmp_path, text) == [expected]


def test_an_unknown_key_nothing_like_a_valid_one_lists_the_valid_keys() -> None:
    assert closest_key(Policy, ("tls", "zzz")) == (
        "unknown key; valid keys here: certificates, min_version, handshake_timeout")


def test_valid_keys_follow_lists_maps_and_optional_sections() -> None:
    assert valid_keys(Policy, ("listeners", 3, "proxy_protocol")) == ["trusted",
                                                                      "header_timeout"]
    assert "master_user" in valid_keys(Policy, ("upstreams", "x", "warm_login"))
    assert valid_keys(Policy, ("state_dir",)) == []  # not a section


def test_a_bad_scalar_is_quoted_but_a_url_that_may_hold_a_password_is_not(
        tmp_path: Path) -> None:
    details = _details(tmp_path, "listeners: [{name: a, port: 70000, mode: tcp}]\n"
                                 "lockout: {redis_url: 'http://:hunter2@10.0.0.1'}\n")
    assert "1: listeners.0.port: Input should be less than or equal to 65535 (got 70000)" in (
        details)
    assert any(d.startswith("1: listeners.0.mode: Input should be 'plain', 'starttls' or "
                            "'tls' (got 'tcp')") for d in details)
    assert not any("hunter2" in d for d in details)


def test_one_index_style_in_every_message(tmp_path: Path) -> None:
    details = _details(tmp_path, "listeners: [{name: a, port: 1}, {name: a, port: 2}]\n"
                                 "users: [{match: '*'}, {match: bob}]\n")
    assert details == ["1: listeners.1.name: listener name 'a' already used by listeners.0",
                       "2: users.1.match: 'bob' can never match: users.0 ('*') matches first"]
    assert not any("[" in d for d in details)
    assert key_path(()) == "(top level)"
