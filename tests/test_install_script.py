"""README command 1 (``packaging/install.sh``): the distribution's Python, whatever is on PATH.

The full command runs in CI from a fresh copy of the checkout (``.ci/quickstart``); these tests
keep the README, the script and the CI step from drifting apart and check the Python choice.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "packaging" / "install.sh"
COMMAND_1 = "bash packaging/install.sh && .venv/bin/popproxy run --config policies/default.yaml"


def test_readme_command_1_is_the_one_ci_runs() -> None:
    assert COMMAND_1 in (ROOT / "README.md").read_text()
    assert COMMAND_1 in (ROOT / "docs" / "quickstart.md").read_text()
    quickstart = (ROOT / ".ci" / "quickstart").read_text()
    assert "bash packaging/install.sh" in quickstart
    assert ".venv/bin/popproxy run --config policies/default.yaml" in quickstart
    ci_run = (ROOT / ".ci" / "run").read_text()
    assert "bash .ci/quickstart" in ci_run
    assert "bash packaging/install.sh --editable test" in ci_run


@pytest.mark.parametrize("script", [SCRIPT, ROOT / ".ci" / "quickstart", ROOT / ".ci" / "run"])
def test_scripts_parse(script: Path) -> None:
    result = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


@pytest.mark.skipif(not Path("/usr/bin/python3").exists(), reason="no distribution Python")
def test_the_distribution_python_wins_over_another_first_on_path(tmp_path: Path) -> None:
    shim = tmp_path / "python3"  # a pyenv-style shim that must not be chosen
    shim.write_text(f"#!/bin/sh\nexec {sys.executable} \"$@\"\n")
    shim.chmod(0o755)
    env = {**os.environ, "PATH": f"{tmp_path}:{os.environ['PATH']}"}
    env.pop("POPPROXY_PYTHON", None)
    result = subprocess.run(["bash", str(SCRIPT), "--print-python"], capture_output=True,
                            text=True, env=env, check=True)
    assert result.stdout.strip() == "/usr/bin/python3"


def test_an_explicit_python_is_used(tmp_path: Path) -> None:
    env = {**os.environ, "POPPROXY_PYTHON": sys.executable}
    result = subprocess.run(["bash", str(SCRIPT), "--print-python"], capture_output=True,
                            text=True, env=env, check=True)
    assert result.stdout.strip() == sys.executable
