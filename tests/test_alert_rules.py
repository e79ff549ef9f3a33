"""The alert rules load, and each alert fires in promtool's rule unit tests."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

from popproxy.metrics import DEFINITIONS
from tests.support.tools import require_tool

GRAFANA = Path(__file__).resolve().parents[1] / "grafana"


def _promtool() -> str:
    return require_tool("promtool", "apt-get install prometheus")


def test_promtool_check_and_unit_test_rules() -> None:
    promtool = _promtool()
    check = subprocess.run([promtool, "check", "rules", str(GRAFANA / "alerts.yml")],
                           capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    assert "SUCCESS: 8 rules found" in check.stdout
    unit = subprocess.run([promtool, "test", "rules", str(GRAFANA / "alerts_test.yml")],
                          capture_output=True, text=True)
    assert unit.returncode == 0, unit.stdout + unit.stderr


def _names_in(text: str) -> set[str]:
    return set(re.findall(r"popproxy_[a-z_]+", text))


def test_dashboard_and_rules_use_only_declared_metrics() -> None:
    declared = {d.name for d in DEFINITIONS.values()}
    # histograms expose _bucket/_count/_sum series
    declared |= {d.name + suffix for d in DEFINITIONS.values()
                 for suffix in ("_bucket", "_count", "_sum")}
    dashboard = json.loads((GRAFANA / "popproxy.json").read_text())
    exprs = " ".join(t["expr"] for p in dashboard["panels"] for t in p.get("targets", []))
    used = _names_in(exprs) | _names_in((GRAFANA / "alerts.yml").read_text())
    assert used and used <= declared, used - declared


def test_dashboard_json_is_generated_from_the_builder() -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location("build_dashboard",
                                                  GRAFANA / "build_dashboard.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert json.loads((GRAFANA / "popproxy.json").read_text()) == module.build()
