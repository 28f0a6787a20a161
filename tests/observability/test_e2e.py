"""End to end: function -> Pushgateway -> Prometheus, and every dashboard panel has data.

Real nats-server, function process, Pushgateway and Prometheus (scraping the Pushgateway
every second with ``honor_labels: true`` and loading dashboards/alerts.yml).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from stripe_bridge import registry
from stripe_bridge.deploy.alerts import alerts
from stripe_bridge.ops.natsserver import NatsServer
from stripe_bridge.push import JOB
from stripe_bridge_testing.dashboard_queries import (
    assert_every_panel_has_data,
    panel_queries,
    query,
    scalar,
)
from stripe_bridge_testing.deliveries import fixture_event, post_event
from stripe_bridge_testing.processes import PrometheusServer, PushgatewayServer
from stripe_bridge_testing.repo import REPO_ROOT
from stripe_bridge_testing.waiting import wait_until

from ..conftest import FunctionFactory
from .conftest import pushed_value

FN = {"function": "invoice_paid"}
PUBLISH = ["invoice_paid", "checkout_session_completed", "subscription_created", "invoice_paid"]


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
