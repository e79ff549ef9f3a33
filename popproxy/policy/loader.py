"""Load a policy from YAML files: parse with positions, merge, validate, freeze.

A policy is one file or a directory of ``*.yaml`` files merged together:
``listeners``, ``users`` and ``routes`` lists are concatenated in file-name order,
``upstreams`` entries are merged by name, and every other section may appear in one file only.
Every error reads ``FILE:LINE: key.path: message``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import TypeAdapter, ValidationError

from popproxy.policy.hints import describe, key_path
from popproxy.policy.paths import policy_base, rebase
from popproxy.policy.schema import Policy, Problem, semantic_problems
from popproxy.policy.yamlpos import Location, line_of, load_with_positions

LIST_SECTIONS = ("listeners", "users", "routes")
NAMED_SECTIONS = ("upstreams",)
# The sections semantic_problems (schema.py) reads, besides the upstreams' names.
CROSS_CHECKED = ("listeners", "users", "routes")


class ConfigError(Exception):
    """A configuration problem; ``details`` holds one ``FILE:LINE: key: message`` per error."""

    def __init__(self, details: list[str]) -> None:
        super().__init__("invalid configuration:\n  " + "\n  ".join(details))
        self.details = details


@dataclass
class _Source:
    path: Path
    positions: dict[Location, int]

    def where(self, loc: Location) -> str:
        line = line_of(self.positions, loc)
        return f"{self.path}:{line}" if line else str(self.path)


@dataclass
class _Merged:
    data: dict[str, Any] = field(default_factory=dict)
    # merged location prefix -> (file, location in that file)
    origin: dict[Location, tuple[_Source, Location]] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)

    def add(self, source: _Source, doc: dict[str, Any]) -> None:
        for key, value in doc.items():
            if key in LIST_SECTIONS and isinstance(value, list):
                self._add_list(source, key, value)
            elif key in NAMED_SECTIONS and isinstance(value, dict):
                self._add_named(source, key, value)
            elif key in self.data:
                first, _ = self.origin[(key,)]
                self.errors.append(f"{source.where((key,))}: {key}: also defined at "
                                   f"{first.where((key,))} (a section may appear once)")
            else:
                self.data[key] = value
                self.origin[(key,)] = (source, (key,))

    def _add_list(self, source: _Source, key: str, items: list[Any]) -> None:
        merged = self.data.setdefault(key, [])
        self.origin.setdefault((key,), (source, (key,)))
        for index, item in enumerate(items):
            self.origin[(key, len(merged))] = (source, (key, index))
            merged.append(item)

    def _add_named(self, source: _Source, key: str, entries: dict[str, Any]) -> None:
        merged = self.data.setdefault(key, {})
        self.origin.setdefault((key,), (source, (key,)))
        for name, value in entries.items():
            if name in merged:
                first, first_loc = self.origin[(key, name)]
                self.errors.append(f"{source.where((key, name))}: {key}.{name}: also defined at "
                                   f"{first.where(first_loc)}")
                continue
            merged[name] = value
            self.origin[(key, name)] = (source, (key, name))

    def where(self, loc: Location) -> tuple[str, Location]:
        """Map a location in the merged data back to its file, line and key path."""
        for size in (2, 1):
            hit = self.origin.get(loc[:size])
            if hit is not None:
                source, base = hit
                inner = (*base, *loc[size:])
                return source.where(inner), inner
        return "(policy)", loc


def policy_files(path: Path) -> list[Path]:
    """The YAML files that make up the policy at ``path`` (a file or a directory)."""
    if path.is_dir():
        return sorted(p for p in path.iterdir() if p.suffix in (".yaml", ".yml") and p.is_file())
    return [path]


def load_config(path: Path) -> Policy:
    """Read, merge, validate and freeze the policy at ``path`` (a file or a directory);
    relative paths in it are made relative to the policy's directory (paths.py)."""
    files = policy_files(path)
    if not files:
        raise ConfigError([f"{path}: no *.yaml files found"])
    merged = _Merged()
    for file in files:
        source, doc = _read(file)
        merged.add(source, doc)
    if merged.errors:
        raise ConfigError(merged.errors)
    try:
        config = Policy.model_validate(merged.data)
    except ValidationError as exc:
        # The rules across entries too, in the same run (after the schema's errors): a
        # duplicate listener should not wait until a typo elsewhere is fixed.
        raise ConfigError(
            [_describe(merged, tuple(e["loc"]), describe(Policy, e)) for e in exc.errors()]
            + [_describe(merged, loc, message)
               for loc, message in _cross_field_problems(merged.data)]
        ) from None
    problems = semantic_problems(config)
    if problems:
        raise ConfigError([_describe(merged, loc, message) for loc, message in problems])
    return rebase(config, policy_base(path))


def _cross_field_problems(data: dict[str, Any]) -> list[Problem]:
    """``semantic_problems`` of a policy that failed the schema: each section it reads is
    validated alone, and one with errors of its own (already reported) is left out."""
    sections: dict[str, Any] = {"listeners": ()}
    for name in CROSS_CHECKED:
        if name in data:
            annotation = Policy.model_fields[name].annotation
            if annotation is None:  # (every policy field is annotated)
                continue
            try:
                adapter: TypeAdapter[Any] = TypeAdapter(annotation)
                sections[name] = adapter.validate_python(data[name])
            except ValidationError:
                continue
    upstreams = data.get("upstreams", {})
    if isinstance(upstreams, dict):  # only their names count here (routes.N.upstream)
        sections["upstreams"] = {str(name): None for name in upstreams}
    else:  # no names to check routes against: that section's error is reported
        sections.pop("routes", None)
    return semantic_problems(Policy.model_construct(**sections))


def _describe(merged: _Merged, merged_loc: Location, message: str) -> str:
    where, loc = merged.where(merged_loc)
    return f"{where}: {key_path(loc)}: {message}"


def _read(path: Path) -> tuple[_Source, dict[str, Any]]:
    try:
        data, positions, duplicates = load_with_positions(path)
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read: {exc.strerror}"]) from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        raise ConfigError([f"{where}: invalid YAML: {exc.problem or exc.context}"]) from None
    except yaml.YAMLError as exc:
        raise ConfigError([f"{path}: invalid YAML: {exc}"]) from None
    if duplicates:
        raise ConfigError([f"{path}:{line}: {'.'.join(map(str, loc))}: duplicate key"
                           for loc, line in duplicates])
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError([f"{path}:1: the top level must be a mapping"])
    return _Source(path, positions), data
