"""The alert rules load, and each alert fires in promtool's rule unit tests; the dashboard is
scoped to the instance variable, described panel by panel, and uses only metrics we export."""

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
    assert "SUCCESS: 11 rules found" in check.stdout
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


# A metric selector in a PromQL expression (as grafana/build_dashboard.py scopes them).
_SELECTOR = re.compile(r"\b(popproxy_\w+|process_\w+|up)\b(\{[^}]*\})?(?!\s*\()")


def _panels() -> list[dict[str, object]]:
    dashboard = json.loads((GRAFANA / "popproxy.json").read_text())
    return [p for p in dashboard["panels"] if p["type"] != "row"]


def test_every_query_is_scoped_to_the_instance_variable() -> None:
    dashboard = json.loads((GRAFANA / "popproxy.json").read_text())
    (instance,) = [v for v in dashboard["templating"]["list"] if v["name"] == "instance"]
    assert instance["includeAll"] and instance["allValue"] == ".*"
    unscoped = []
    for panel in _panels():
        for target in panel["targets"]:  # type: ignore[attr-defined]
            selectors = _SELECTOR.findall(target["expr"])
            assert selectors, target["expr"]
            unscoped += [(panel["title"], name) for name, labels in selectors
                         if 'instance=~"$instance"' not in labels]
    assert not unscoped, unscoped


def test_every_panel_has_a_description_and_shows_rates_not_hourly_increases() -> None:
    panels = _panels()
    assert all(isinstance(p.get("description"), str) and p["description"] for p in panels), [
        p["title"] for p in panels if not p.get("description")]
    exprs = [t["expr"] for p in panels for t in p["targets"]]  # type: ignore[attr-defined]
    assert not [e for e in exprs if "increase(" in e]


def test_stat_row_says_what_an_admin_looks_at_first() -> None:
    stats = [p for p in _panels() if p["type"] == "stat"]
    assert [p["title"] for p in stats] == ["Up", "Version", "Sessions now",
                                          "Certificate days left", "Lockouts active",
                                          "Upstreams down"]
    assert all(p["gridPos"]["y"] == 0 for p in stats)  # type: ignore[index]


def test_alerts_for_down_certificates_and_upstreams_without_traffic() -> None:
    import yaml

    rules = yaml.safe_load((GRAFANA / "alerts.yml").read_text())["groups"][0]["rules"]
    exprs = {rule["alert"]: rule["expr"] for rule in rules}
    assert exprs["PopproxyDown"] == 'up{job="popproxy"} == 0'
    assert exprs["PopproxyUpstreamDown"] == "popproxy_upstream_up == 0"
    assert "14 * 86400" in exprs["PopproxyCertificateExpiring"]
