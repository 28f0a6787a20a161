"""Generated dashboards and alert rules: in step with the code, valid for promtool/amtool."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from stripe_bridge import registry
from stripe_bridge.billing.lifecycle_projector import LifecycleMetrics
from stripe_bridge.billing.openmeter import ForwarderMetrics
from stripe_bridge.billing.projector import ProjectorMetrics
from stripe_bridge.billing.usage_counter import CounterMetrics
from stripe_bridge.deploy.alert_model import EXPORTER_PREFIX, RUNBOOK_URL
from stripe_bridge.deploy.alerts import alerts
from stripe_bridge.deploy.codegen import observability_doc, replace_section
from stripe_bridge.deploy.dashboards import bridge_dashboard, dashboard_files
from stripe_bridge.deploy.promoperator import CONSUMER_JOBS
from stripe_bridge.metrics import metrics_table
from stripe_bridge_testing.repo import REPO_ROOT

DASHBOARDS = REPO_ROOT / "dashboards"
RUNBOOK = REPO_ROOT / "docs" / "runbook.md"


def run(*args: str) -> subprocess.CompletedProcess[str]:
    # promtool's unit tests take 20 s of CPU alone and passed 60 s on a loaded machine.
    return subprocess.run(args, capture_output=True, text=True, timeout=240, cwd=DASHBOARDS)


@pytest.mark.parametrize("path", sorted(dashboard_files(REPO_ROOT)), ids=lambda p: p.name)
def test_committed_file_equals_fresh_render(path: Path) -> None:
    assert path.read_text() == dashboard_files(REPO_ROOT)[path], "run `stripe-bridge generate`"


def test_metric_list_in_docs_is_current() -> None:
    doc = (REPO_ROOT / "docs" / "observability.md").read_text()
    assert doc == replace_section(doc, "metrics", metrics_table()), "run `stripe-bridge generate`"
    assert doc == observability_doc(doc), "run `stripe-bridge generate`"
    assert "`stripe_bridge_webhooks_total` | counter | `event_type`, `outcome`, `reason`" in doc
    assert "`stripe_bridge_openmeter_events_retried_total` | counter | `reason`" in doc
    assert "`stripe_bridge_tiers_consumer_lag` | gauge | - |" in doc


#: Each long-running consumer (workloads.consumer_specs) and the metrics it serves.
CONSUMER_METRICS = {
    "forward-openmeter": ForwarderMetrics,
    "project-tiers": ProjectorMetrics,
    "project-lifecycle": LifecycleMetrics,
    "count-usage": CounterMetrics,
}


def exposed_by(*holders: Any) -> set[str]:
    """Sample names, and the names of labelled gauges no child of which is set yet (the
    counter's lag appears with its partition label once the counter runs)."""
    families = [metric for holder in holders for metric in holder.registry.collect()]
    return {sample.name for metric in families for sample in metric.samples} | {
        metric.name for metric in families if metric.type == "gauge"
    }


def test_billing_alerts_use_metrics_the_consumers_expose() -> None:
    exposed = exposed_by(*(metrics() for metrics in CONSUMER_METRICS.values()))
    used = {
        name
        for alert in alerts()
        for name in re.findall(
            r"stripe_bridge_(?:openmeter|tiers|lifecycle|usage_counter)_[a-z_]+", alert.expr
        )
    }
    assert used and used <= exposed, used - exposed


@pytest.mark.parametrize("consumer", sorted(CONSUMER_METRICS))
def test_every_consumer_has_a_lag_and_a_down_alert(consumer: str) -> None:
    assert set(CONSUMER_METRICS) == set(CONSUMER_JOBS), "a consumer without alerts"
    (lag,) = (name for name in exposed_by(CONSUMER_METRICS[consumer]()) if name.endswith("_lag"))
    lagging = [a for a in alerts() if re.search(rf"\b{lag}\b", a.expr)]
    assert lagging, f"no alert on {lag}"
    # Lag is a gauge the consumer serves: when it is down only its scrape target tells.
    up = f'up{{job="{CONSUMER_JOBS[consumer]}"}}'
    assert [a for a in alerts() if up in a.expr], f"no alert on {up} being 0"


@pytest.mark.servers  # runs promtool
def test_promtool_checks_rules() -> None:
    result = run("promtool", "check", "rules", "alerts.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(alerts())} rules found" in result.stdout


@pytest.mark.servers  # runs promtool (about 20 s)
@pytest.mark.timeout(300)
def test_promtool_unit_tests_fire_and_stay_quiet() -> None:
    cases = yaml.safe_load((DASHBOARDS / "alerts_test.yml").read_text())["tests"]
    names = {case["name"] for case in cases}
    for alert in alerts():
        assert {f"{alert.name} fires", f"{alert.name} stays quiet"} <= names
    firing = [c for c in cases if c["name"].endswith(" fires")]
    assert all(c["alert_rule_test"][0]["exp_alerts"] for c in firing)
    result = run("promtool", "test", "rules", "alerts_test.yml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_has_severity_and_a_runbook_section() -> None:
    rules = yaml.safe_load((DASHBOARDS / "alerts.yml").read_text())["groups"][0]["rules"]
    runbook = RUNBOOK.read_text()
    assert {r["labels"]["severity"] for r in rules} == {"critical", "warning"}
    for rule in rules:
        url = rule["annotations"]["runbook_url"]
        assert url.startswith(RUNBOOK_URL + "#")
        anchor = url.split("#", 1)[1]
        assert f'<a id="{anchor}"></a>' in runbook, f"docs/runbook.md lacks #{anchor}"
        assert f"`{rule['alert']}`" in runbook


@pytest.mark.servers  # runs amtool
def test_alertmanager_example_routes_critical_to_pagerduty() -> None:
    check = run("amtool", "check-config", "alertmanager.yml")
    assert check.returncode == 0, check.stdout + check.stderr
    for severity, receiver in (("critical", "pagerduty"), ("warning", "slack")):
        routed = run(
            "amtool", "config", "routes", "test", "--config.file=alertmanager.yml",
            f"severity={severity}", "alertname=StripeBridgePublishFailures",
        )  # fmt: skip
        assert routed.stdout.strip() == receiver, routed.stdout + routed.stderr


def _model(name: str) -> dict[str, Any]:
    model: dict[str, Any] = json.loads((DASHBOARDS / name).read_text())
    return model


@pytest.mark.parametrize("name", ["stripe-bridge.json", "nats-cluster.json", "billing.json"])
def test_dashboard_layout_is_valid(name: str) -> None:
    panels = _model(name)["panels"]
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids))
    for panel in panels:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24
        if panel["type"] != "row":
            assert panel["targets"] and all(t["expr"] for t in panel["targets"])
    # Panels must not overlap.
    cells: set[tuple[int, int]] = set()
    for panel in panels:
        g = panel["gridPos"]
        area = {
            (x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])
        }
        assert not cells & area, panel["title"]
        cells |= area


def test_bridge_dashboard_follows_the_registry() -> None:
    model = _model("stripe-bridge.json")
    variables = {v["name"]: v for v in model["templating"]["list"]}
    assert variables["event_type"]["query"].split(",") == [t.name for t in registry.EVENT_TYPES]
    assert variables["function"]["query"].split(",") == registry.function_names()
    titles = {p["title"] for p in model["panels"]}
    assert {t.name for t in registry.EVENT_TYPES} <= titles
    per_type = [p for p in bridge_dashboard().panels() if p.kind == "stat"]
    assert len(per_type) == len(registry.EVENT_TYPES)
    for panel in model["panels"]:
        for target in panel.get("targets", []):
            assert re.search(r"stripe_bridge_|push_time_seconds", target["expr"])


def test_nats_queries_match_the_deployed_exporter() -> None:
    statefulset = (REPO_ROOT / "nats" / "base" / "statefulset.yaml").read_text()
    docs = list(yaml.safe_load_all(statefulset))
    containers = [c for d in docs if d for c in d["spec"]["template"]["spec"]["containers"]]
    (exporter,) = [c for c in containers if "prometheus-nats-exporter" in c["image"]]
    # -healthz feeds NatsServerUnhealthy and NatsClusterNoQuorum (the sidecar's `up` cannot).
    args = {f"-prefix={EXPORTER_PREFIX}", "-varz", "-routez", "-jsz=all", "-healthz"}
    assert args <= set(exporter["args"])
    model = _model("nats-cluster.json")
    names = {
        name
        for panel in model["panels"]
        for target in panel.get("targets", [])
        for name in re.findall(r"\b[a-z_]+(?=\{|\)|\s|$)", target["expr"])
        if name.startswith(("nats_", "gnatsd_", "jetstream_"))
    }
    assert names and all(n.startswith(f"{EXPORTER_PREFIX}_") for n in names), names
