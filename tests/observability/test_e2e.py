"""End to end: function -> Pushgateway -> Prometheus, and every dashboard panel has data.

Real nats-server, function process, Pushgateway and Prometheus (scraping the Pushgateway
every second with ``honor_labels: true`` and loading dashboards/alerts.yml).
"""

from __future__ import annotations

import json
import math
from collections.abc import Collection, Iterator, Mapping
from pathlib import Path
from typing import Any, Protocol

import httpx
import pytest
from stripe_bridge import registry
from stripe_bridge.deploy.alerts import alerts
from stripe_bridge.ops.natsserver import NatsServer
from stripe_bridge.push import JOB
from stripe_bridge_testing.processes import PrometheusServer, PushgatewayServer
from stripe_bridge_testing.waiting import wait_until

from ..conftest import FunctionFactory
from ..helpers import REPO_ROOT, fixture_event, post_event
from .conftest import pushed_value

#: What Grafana would substitute with "All" selected and a short time range.
VARIABLES = {
    "$__rate_interval": "5m",
    "$environment": "production",
    "$event_type": ".*",
    "$function": ".*",
    "$stream": ".*",
}
FN = {"function": "invoice_paid"}
PUBLISH = ["invoice_paid", "checkout_session_completed", "subscription_created", "invoice_paid"]


class PrometheusApi(Protocol):
    """A Prometheus reachable at ``url`` (a PrometheusServer here, a container in staging)."""

    @property
    def url(self) -> str:
        """Base URL without a trailing slash."""


def prometheus_config(pushgateway: PushgatewayServer) -> str:
    return f"""
global:
  scrape_interval: 1s
  evaluation_interval: 1s
rule_files:
  - {REPO_ROOT / "dashboards" / "alerts.yml"}
scrape_configs:
  - job_name: pushgateway
    honor_labels: true
    static_configs:
      - targets: ["127.0.0.1:{pushgateway.port}"]
"""


@pytest.fixture
def prometheus(tmp_path: Path, pushgateway: PushgatewayServer) -> Iterator[PrometheusServer]:
    """Prometheus scraping ``pushgateway`` every second, with the bridge's alert rules."""
    server = PrometheusServer(tmp_path / "prometheus", prometheus_config(pushgateway))
    server.start()
    try:
        yield server
    finally:
        server.stop()


def query(prometheus: PrometheusApi, expr: str) -> dict[str, Any]:
    response = httpx.get(f"{prometheus.url}/api/v1/query", params={"query": expr}, timeout=5)
    body: dict[str, Any] = response.json()
    return body


def substitute(expr: str, variables: Mapping[str, str] = VARIABLES) -> str:
    for variable, value in variables.items():
        expr = expr.replace(variable, value)
    assert "$" not in expr, expr
    return expr


def panel_queries(name: str, variables: Mapping[str, str] = VARIABLES) -> dict[str, str]:
    """Every target of a generated dashboard: ``title/refId`` -> PromQL with variables set."""
    model = json.loads((REPO_ROOT / "dashboards" / name).read_text())
    return {
        f"{panel['title']}/{target['refId']}": substitute(target["expr"], variables)
        for panel in model["panels"]
        for target in panel.get("targets", [])
    }


def has_finite_value(result: dict[str, Any]) -> bool:
    samples = result.get("data", {}).get("result", [])
    return any(math.isfinite(float(s["value"][1])) for s in samples)


def scalar(prometheus: PrometheusServer, expr: str) -> float | None:
    samples = query(prometheus, expr)["data"]["result"]
    return float(samples[0]["value"][1]) if samples else None


def assert_every_panel_has_data(
    prometheus: PrometheusApi,
    dashboard: str,
    at_least: int,
    timeout: float,
    variables: Mapping[str, str] = VARIABLES,
    skip: Collection[str] = (),
) -> None:
    """Every panel query of ``dashboard`` parses and returns a finite value within ``timeout``.

    Panels titled in ``skip`` are left out (a run that does not deploy what they show).
    """
    pending = {
        key: expr
        for key, expr in panel_queries(dashboard, variables).items()
        if key.rsplit("/", 1)[0] not in skip
    }
    assert len(pending) >= at_least
    answers: dict[str, dict[str, Any]] = {}

    def all_panels_have_data() -> bool:
        for key in list(pending):
            answers[key] = query(prometheus, pending[key])
            assert answers[key]["status"] == "success", (key, answers[key])
            if has_finite_value(answers[key]):
                del pending[key]
        return not pending

    try:
        wait_until(all_panels_have_data, timeout, f"data for every panel of {dashboard}")
    except TimeoutError:
        pytest.fail(f"panels without data: { {k: answers.get(k) for k in pending} }")


def test_every_bridge_panel_returns_data(
    stream: NatsServer,
    start_function: FunctionFactory,
    pushgateway: PushgatewayServer,
    prometheus: PrometheusServer,
) -> None:
    fn = start_function(
        registry.CATCH_ALL,
        NATS_URL=stream.url,
        PUSHGATEWAY_URL=pushgateway.url,
        # The panels select one environment (the grouping-key label this sets).
        ENVIRONMENT="production",
        # Above the scrape interval, so the zero snapshot is scraped (docs/observability.md).
        PUSHGATEWAY_MIN_INTERVAL="2",
    )
    wait_until(lambda: scalar(prometheus, 'up{job="pushgateway"}') == 1, 30, "first scrape")
    events = [fixture_event(name, fresh_id=True) for name in PUBLISH]
    for event in events:
        assert post_event(fn.url, event).json()["status"] == "published"
    assert post_event(fn.url, events[0]).json()["status"] == "duplicate"
    assert post_event(fn.url, events[1], secret="whsec_rotated_" + "b" * 24).status_code == 400

    def stored(outcome: str) -> float | None:
        return scalar(
            prometheus,
            f'sum(stripe_bridge_webhooks_total{{job="{JOB}",function="{registry.CATCH_ALL}",'
            f'outcome="{outcome}"}})',
        )

    wait_until(lambda: stored("published") == len(PUBLISH), 30, "published count in Prometheus")
    wait_until(lambda: stored("duplicate") == 1, 30, "duplicate count in Prometheus")
    mismatch = 'stripe_bridge_signature_failures_total{reason="signature_mismatch"}'
    wait_until(lambda: scalar(prometheus, f"sum({mismatch})") == 1, 30, "signature failure")

    assert_every_panel_has_data(prometheus, "stripe-bridge.json", at_least=25, timeout=60)

    latency = 'histogram_quantile(0.99, sum by (le) (rate(stripe_bridge_request_duration_seconds_bucket{outcome="published"}[1m])))'  # noqa: E501
    p99 = scalar(prometheus, latency)
    assert p99 is not None and 0 < p99 < 30


def test_nats_dashboard_queries_parse(prometheus: PrometheusServer) -> None:
    queries = panel_queries("nats-cluster.json")
    assert len(queries) >= 12
    for key, expr in queries.items():
        answer = query(prometheus, expr)
        assert answer["status"] == "success", (key, answer)
    assert query(prometheus, "sum(rate(nats_stream_total_bytes[1m])")["status"] == "error"


def test_alert_rules_load_and_evaluate(prometheus: PrometheusServer) -> None:
    def rules() -> list[dict[str, Any]]:
        groups = httpx.get(f"{prometheus.url}/api/v1/rules", timeout=5).json()["data"]["groups"]
        return [rule for group in groups for rule in group["rules"]]

    wait_until(
        lambda: len(rules()) == len(alerts()) and all(r["health"] == "ok" for r in rules()),
        30,
        "every alert rule evaluated without error",
    )


def test_final_push_on_sigterm(
    stream: NatsServer, start_function: FunctionFactory, pushgateway: PushgatewayServer
) -> None:
    fn = start_function(
        "invoice_paid",
        NATS_URL=stream.url,
        PUSHGATEWAY_URL=pushgateway.url,
        PUSHGATEWAY_MIN_INTERVAL="300",  # no regular push would come before the SIGTERM
    )
    assert post_event(fn.url, fixture_event("invoice_paid", fresh_id=True)).status_code == 200
    published = {"outcome": "published", "event_type": "invoice.paid", **FN}
    wait_until(
        lambda: pushed_value(pushgateway.url, "stripe_bridge_webhooks_total", **published) == 0,
        10,
        "zero snapshot pushed",
    )
    fn.stop()
    assert pushed_value(pushgateway.url, "stripe_bridge_webhooks_total", **published) == 1
    # Gauges of an exited instance must not count it as busy or connected.
    assert pushed_value(pushgateway.url, "stripe_bridge_inflight_requests") == 0
    assert pushed_value(pushgateway.url, "stripe_bridge_nats_connected") == 0
    cold_start = pushed_value(pushgateway.url, "stripe_bridge_cold_start_seconds", **FN)
    assert cold_start is not None and cold_start > 0
