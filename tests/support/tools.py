"""External programs the integration tests need (installed by ``.ci/run`` with apt-get)."""

from __future__ import annotations

import os
import shutil

import pytest


def under_ci() -> bool:
    """``CI=true``: the CI machine installs every tool, so a missing one is a failure there."""
    return os.environ.get("CI", "").lower() == "true"


def require_tool(name: str, hint: str = "") -> str:
    """The path of program ``name``; otherwise fail under CI and skip elsewhere.

    ``hint`` says how to install it, e.g. ``"apt-get install mpop"``.
    """
    path = shutil.which(name)
    if path is None:
        reason = f"{name} not found" + (f" ({hint})" if hint else "")
        if under_ci():
            pytest.fail(reason, pytrace=False)
        pytest.skip(reason)
    return path
