"""YAML with positions (``policy/yamlpos.py``): every key and list item keeps its line, keys
given twice are reported (PyYAML would keep the last one silently), and a position missing
for a key falls back to its nearest parent's."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from popproxy.policy.yamlpos import line_of, load_with_positions

POLICY = """\
listeners:
  - name: pop3
    port: 110
  - {name: pop3s, port: 995}
limits:
  idle_timeout: 600
"""


def _load(tmp_path: Path, text: str) -> tuple[object, dict[tuple[str | int, ...], int], list[
        tuple[tuple[str | int, ...], int]]]:
    path = tmp_path / "policy.yaml"
    path.write_text(text)
    return load_with_positions(path)


def test_keys_and_items_keep_their_lines(tmp_path: Path) -> None:
    data, positions, duplicates = _load(tmp_path, POLICY)
    assert data == {"listeners": [{"name": "pop3", "port": 110},
                                  {"name": "pop3s", "port": 995}],
                    "limits": {"idle_timeout": 600}}
    assert positions[("listeners",)] == 1
    assert positions[("listeners", 0, "port")] == 3
    assert positions[("listeners", 1)] == 4
    assert positions[("limits", "idle_timeout")] == 6
    assert duplicates == []


def test_a_key_given_twice_is_reported_with_its_second_line(tmp_path: Path) -> None:
    _, _, duplicates = _load(tmp_path, "limits:\n  max_sessions: 5\n  max_sessions: 500\n")
    assert duplicates == [(("limits", "max_sessions"), 3)]


def test_line_of_falls_back_to_the_nearest_parent(tmp_path: Path) -> None:
    _, positions, _ = _load(tmp_path, POLICY)
    assert line_of(positions, ("listeners", 1, "tls_min_version")) == 4
    assert line_of(positions, ("upstream", "port")) == 1  # not in the file: its top
    assert line_of({}, ("upstream",)) is None


def test_an_empty_file_is_no_document(tmp_path: Path) -> None:
    assert _load(tmp_path, "# nothing yet\n") == (None, {}, [])


def test_only_safe_yaml(tmp_path: Path) -> None:
    with pytest.raises(yaml.YAMLError):
        _load(tmp_path, "limits: !!python/object/apply:os.system ['true']\n")
