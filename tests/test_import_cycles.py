"""No import cycles between the modules of ``popproxy`` (issue 16).

Every import statement counts: at module level, inside functions, and inside
``if TYPE_CHECKING:`` blocks.  A ``TYPE_CHECKING`` import never runs, but it is still a
dependency of the design: ``auth -> session`` under ``TYPE_CHECKING`` was exactly the
"shared mutable bag" this test exists to keep out.  An import of a package's submodule counts
as an edge to that submodule only (not to the package's ``__init__``, which Python runs first
but which re-exports nothing here).
"""

from __future__ import annotations

import ast
from pathlib import Path

import popproxy

PACKAGE_DIR = Path(popproxy.__file__).parent


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(PACKAGE_DIR.rglob("*.py"))}


def _imported(node: ast.Import | ast.ImportFrom, module: str, is_package: bool) -> list[str]:
    """The dotted names an import statement may refer to (modules or names in modules)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    base = node.module or ""
    if node.level:  # relative: resolved against the importing module's package
        package = module.split(".")
        package = package if is_package else package[:-1]
        package = package[: len(package) - node.level + 1]
        base = ".".join([*package, base]) if base else ".".join(package)
    # Each name is a submodule or something defined in ``base``: the graph resolves which.
    return [f"{base}.{alias.name}" for alias in node.names]


def _edges(source: str, name: str, is_package: bool, modules: set[str]) -> set[str]:
    """The popproxy modules that ``source`` (module ``name``) imports anywhere in its text."""
    edges = set()
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Import | ast.ImportFrom):
            continue
        for target in _imported(node, name, is_package):
            # "from popproxy.proxy import spool" names a module; "from popproxy.proxy.spool
            # import Spooled" names something in one.
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target and target != name:
                edges.add(target)
    return edges


def import_graph() -> dict[str, set[str]]:
    """Module -> the popproxy modules it imports."""
    modules = _modules()
    return {name: _edges(path.read_text(), name, path.name == "__init__.py", set(modules))
            for name, path in modules.items()}


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle (as a path that returns to its start) per strongly connected component."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[set[str]] = []

    def visit(node: str) -> None:  # Tarjan; the package is small enough for recursion
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for succ in sorted(graph[node]):
            if succ not in index:
                visit(succ)
                low[node] = min(low[node], low[succ])
            elif succ in on_stack:
                low[node] = min(low[node], index[succ])
        if low[node] == index[node]:
            component = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.add(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(component)

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return [_cycle_in(graph, component) for component in components]


def _cycle_in(graph: dict[str, set[str]], component: set[str]) -> list[str]:
    """A shortest path from the component's first module back to itself (breadth first)."""
    start = min(component)
    paths = {start: [start]}
    queue = [start]
    while queue:
        node = queue.pop(0)
        for succ in sorted(graph[node] & component):
            if succ == start:
                return [*paths[node], start]
            if succ not in paths:
                paths[succ] = [*paths[node], succ]
                queue.append(succ)
    raise AssertionError(f"no cycle through {start}")  # a component always has one


def test_popproxy_has_no_import_cycles() -> None:
    cycles = find_cycles(import_graph())
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_the_walk_sees_imports_in_functions_and_type_checking_blocks() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert find_cycles(graph) == [["a", "b", "c", "a"]]
    source = (
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from popproxy.proxy.session import Session\n"
        "def f():\n    from popproxy.proxy import spool\n"
        "from . import errors\n"
        "import popproxy.metrics\n"
    )
    modules = set(import_graph())
    assert _edges(source, "popproxy.proxy.auth", False, modules) == {
        "popproxy.proxy.session", "popproxy.proxy.spool", "popproxy.proxy.errors",
        "popproxy.metrics",
    }


def test_the_graph_covers_the_package() -> None:
    graph = import_graph()
    assert "popproxy.proxy.session" in graph["popproxy.proxy.server"]
    assert "popproxy.proxy.spool" in graph["popproxy.proxy.delivery"]
