"""House rule 1: the protocol and policy cores never do I/O themselves.

Every module of the sans-io packages is parsed (not imported, so a lazy import inside a
function counts too) and must not import asyncio, socket, ssl or selectors: the I/O shell
(``popproxy.proxy``) owns those.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import popproxy

SANS_IO_PACKAGES = ("pop3", "policy", "scan", "wire")
IO_MODULES = frozenset({"asyncio", "socket", "ssl", "selectors"})
ROOT = Path(popproxy.__file__).parent


def _imported_roots(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import)
             for a in n.names}
    names |= {(n.module or "").split(".")[0] for n in ast.walk(tree)
              if isinstance(n, ast.ImportFrom) and n.level == 0}
    return names


MODULES = sorted(p for pkg in SANS_IO_PACKAGES for p in (ROOT / pkg).rglob("*.py"))


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(ROOT)))
def test_module_imports_no_io(path: Path) -> None:
    assert not _imported_roots(path) & IO_MODULES


def test_every_sans_io_package_is_checked() -> None:
    # A renamed package must not silently drop out of the check.
    for package in SANS_IO_PACKAGES:
        assert (ROOT / package / "__init__.py").is_file(), package
    assert any(p.name == "proxyproto.py" for p in MODULES)


def test_the_check_sees_io_imports(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("import asyncio.events\nfrom ssl import SSLContext\nfrom . import socket\n")
    assert _imported_roots(bad) & IO_MODULES == {"asyncio", "ssl"}
