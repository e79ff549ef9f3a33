"""``warm_login`` in the policy: validated with FILE:LINE errors, password kept out of it."""

from __future__ import annotations

from pathlib import Path

import pytest

from popproxy.policy import ConfigError, WarmLogin, load_config

BASE = "listeners: [{name: a, port: 1995, mode: tls}]\n"


def _details(tmp_path: Path, text: str) -> list[str]:
    path = tmp_path / "p.yaml"
    path.write_text(BASE + text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    return info.value.details


def test_warm_login_loads_on_default_and_named_upstreams(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(BASE + "upstream:\n  warm_login: {master_user: warmer, password_file: /s}\n"
                    "upstreams:\n  legacy:\n    host: 192.0.2.7\n    warm_login:\n"
                    "      {master_user: m, password_file: /t, separator: '%'}\n")
    config = load_config(path)
    assert config.upstream.warm_login == WarmLogin(master_user="warmer",
                                                   password_file=Path("/s"))
    legacy = config.upstreams["legacy"].warm_login
    assert legacy is not None and legacy.login_name("alice") == "alice%m"


def test_a_space_in_the_master_user_is_an_error_at_its_line(tmp_path: Path) -> None:
    (detail,) = _details(tmp_path, "upstream:\n  warm_login:\n    master_user: 'a b'\n"
                                   "    password_file: /s\n")
    assert detail.startswith(f"{tmp_path / 'p.yaml'}:4: upstream.warm_login.master_user: ")
    assert "one POP3 argument" in detail


def test_the_password_itself_is_not_a_policy_key(tmp_path: Path) -> None:
    (detail,) = _details(tmp_path, "upstream:\n  warm_login:\n    master_user: m\n"
                                   "    password_file: /s\n    password: hunter2\n")
    assert "upstream.warm_login.password" in detail and "hunter2" not in detail


def test_separator_is_one_visible_character(tmp_path: Path) -> None:
    (detail,) = _details(tmp_path, "upstream:\n  warm_login: {master_user: m, "
                                   "password_file: /s, separator: '**'}\n")
    assert "upstream.warm_login.separator" in detail
    assert WarmLogin(master_user="warmer", password_file=Path("/s")).login_name("bob") == \
        "bob*warmer"
