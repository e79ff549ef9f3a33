"""The test tree mirrors the package: ``popproxy/a/b.py`` is tested in ``tests/a/test_b.py``.

Like mitmproxy's ``test/filename_matching.py``: whoever opens a module finds its tests by name,
and a module without tests shows up here instead of hiding behind an end-to-end test.
``popproxy/x.py`` maps to ``tests/test_x.py``; package ``__init__.py`` files hold re-exports
only and are not mirrored.

``EXEMPT`` is for modules that will never have a test file of their own; ``BACKLOG`` lists
modules that should have one and do not yet.  Both fail the test when an entry is stale (the
module is gone, or its test file now exists), so they can only shrink.
"""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "popproxy"
TESTS = ROOT / "tests"


EXEMPT: dict[str, str] = {
    "__main__.py": "two lines that call cli.main; tests/test_cli.py runs `python -m popproxy`",
}

# Modules with no test file of their own yet, each with a test that imports it today, or the
# module it runs under.  Empty since issue 16 item 7 was done: a new module comes with its test
# file; if one cannot, list it here with its reason, then delete the entry once the file exists
# (the test insists).
BACKLOG: dict[str, str] = {}


def modules() -> list[str]:
    """Every module under popproxy/, as a path relative to it (``proxy/session.py``)."""
    return sorted(
        path.relative_to(PACKAGE).as_posix()
        for path in PACKAGE.rglob("*.py")
        if path.name != "__init__.py"
    )


def mirror_of(module: str) -> Path:
    """``proxy/session.py`` -> ``tests/proxy/test_session.py``."""
    path = Path(module)
    return TESTS / path.parent / f"test_{path.name}"


def test_mapping_follows_the_package_tree() -> None:
    assert mirror_of("proxy/session.py") == TESTS / "proxy" / "test_session.py"
    assert mirror_of("cli.py") == TESTS / "test_cli.py"


def test_every_module_has_a_test_file_of_the_same_name() -> None:
    missing = [
        f"{module} -> {mirror_of(module).relative_to(ROOT)}"
        for module in modules()
        if module not in EXEMPT and module not in BACKLOG and not mirror_of(module).exists()
    ]
    assert not missing, "modules without a test file:\n" + "\n".join(missing)


def test_the_lists_name_only_modules_that_exist_and_lack_tests() -> None:
    present = set(modules())
    listed = {**EXEMPT, **BACKLOG}
    gone = sorted(set(listed) - present)
    assert not gone, f"listed but no longer in popproxy/: {gone}"
    covered = sorted(m for m in BACKLOG if mirror_of(m).exists())
    assert not covered, f"has its test file now, remove it from BACKLOG: {covered}"
    assert not set(EXEMPT) & set(BACKLOG)
    assert all(reason.strip() for reason in listed.values())


# House rule 7 (small files and functions), issue 16's acceptance: a module that grows past
# this is split by responsibility, a function past that into named steps.
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 50


def test_no_module_or_function_is_too_long() -> None:
    import ast

    too_long = []
    for module in [*modules(), *(f"{p.parent.relative_to(PACKAGE).as_posix()}/__init__.py"
                                 for p in PACKAGE.rglob("__init__.py"))]:
        source = (PACKAGE / module).read_text()
        if len(source.splitlines()) > MAX_MODULE_LINES:
            too_long.append(f"{module}: {len(source.splitlines())} lines")
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                length = (node.end_lineno or node.lineno) - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    too_long.append(f"{module}:{node.lineno} {node.name}: {length} lines")
    assert not too_long, "\n".join(too_long)
