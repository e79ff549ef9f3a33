"""YAML loading that remembers where every key was, so config errors name file, line and key."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

Location = tuple[str | int, ...]


class PositionedLoader(yaml.SafeLoader):
    """A SafeLoader that records the line (1-based) of every mapping key and sequence item."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.positions: dict[Location, int] = {}
        # Keys given twice in one mapping: PyYAML silently keeps the last, we refuse.
        self.duplicates: list[tuple[Location, int]] = []

    def record(self, node: yaml.Node, loc: Location) -> None:
        self.positions.setdefault(loc, node.start_mark.line + 1)
        if isinstance(node, yaml.MappingNode):
            seen: set[object] = set()
            for key_node, value_node in node.value:
                key = key_node.value
                if key in seen:
                    self.duplicates.append(((*loc, key), key_node.start_mark.line + 1))
                seen.add(key)
                self.positions[(*loc, key)] = key_node.start_mark.line + 1
                self.record(value_node, (*loc, key))
        elif isinstance(node, yaml.SequenceNode):
            for index, item in enumerate(node.value):
                self.record(item, (*loc, index))


def load_with_positions(
    path: Path,
) -> tuple[Any, dict[Location, int], list[tuple[Location, int]]]:
    """Parse ``path``; returns the data, a map of key path -> line, and duplicate keys.

    Raises ``yaml.YAMLError`` (with its own file position) for malformed YAML.
    """
    text = path.read_text(encoding="utf-8")
    loader = PositionedLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None, {}, []
        loader.record(node, ())
        data = loader.construct_document(node)
    finally:
        loader.dispose()
    return data, loader.positions, loader.duplicates


def line_of(positions: dict[Location, int], loc: Location) -> int | None:
    """The line of ``loc`` or of its nearest recorded parent."""
    for end in range(len(loc), -1, -1):
        line = positions.get(loc[:end])
        if line is not None:
            return line
    return None
