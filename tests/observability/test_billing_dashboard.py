"""End to end: the billing consumers as processes -> Prometheus, every billing panel has data.

A real nats-server, ``forward-openmeter`` feeding tests/billing's OpenMeter ingest stand-in
(one scripted 503 so the breaker opens and closes once), ``project-tiers`` and
``project-lifecycle`` reading real Stripe payloads, ``count-usage`` counting a record of
every meter, the entitlements function answering checks, one ``export --all`` run pushing
to a real Pushgateway, and a real Prometheus scraping them every second under the scrape
jobs the alerts expect, labelled ``environment`` as the Kubernetes scrape config in
docs/observability.md labels them (the Pushgateway with ``honor_labels``).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
from stripe_bridge.billing.tiers import DEFAULT_TIERS
from stripe_bridge.billing.usage import UsageRecord
from stripe_bridge.cli import main
from stripe_bridge.deploy.alert_model import (
    COUNTER_JOB,
    FORWARDER_JOB,
    LIFECYCLE_JOB,
    PROJECTOR_JOB,
)
from stripe_bridge.ops.natsserver import NatsServer
from stripe_bridge_testing.consumer_processes import ConsumerProcess, ForwarderProcess
from stripe_bridge_testing.dashboard_queries import assert_every_panel_has_data, scalar
from stripe_bridge_testing.openmeter_standin import IngestStandIn
from stripe_bridge_testing.processes import (
    FunctionProcess,
    ManagedProcess,
    PrometheusComponent,
    PrometheusServer,
    PushgatewayServer,
)
from stripe_bridge_testing.repo import REPO_ROOT
from stripe_bridge_testing.waiting import wait_until

from ..billing.conftest import API_KEY, publish, records
from ..billing.sequences import lifecycle
from ..billing.test_projector import publish_deliveries

USAGE_EVENTS = 60


def scrape_config(
    forwarder: ConsumerProcess, projector: ConsumerProcess, others: dict[str, str], gateway: str
) -> str:
    extra = "".join(
        f"""
  - job_name: {job}
    static_configs:
      - targets: ["{target}"]
        labels: {{environment: production}}"""
        for job, target in others.items()
    )
    return f"""
global:
  scrape_interval: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: {FORWARDER_JOB}
    static_configs:
      - targets: ["127.0.0.1:{forwarder.metrics_port}"]
        labels: {{environment: production}}
  - job_name: {PROJECTOR_JOB}
    static_configs:
      - targets: ["127.0.0.1:{projector.metrics_port}"]
        labels: {{environment: production}}
  - job_name: pushgateway
    honor_labels: true
    static_configs:
      - targets: ["{gateway}"]{extra}
"""


def test_every_billing_panel_returns_data(stream: NatsServer, tmp_path: Path) -> None:
    with IngestStandIn(API_KEY) as ingest:
        # One failure opens the breaker (threshold 1); the half-open trial closes it again.
        ingest.fail_next(1, 503)
        forwarder = ForwarderProcess(
            stream.url,
            ingest,
            tmp_path / "forwarder",
            OPENMETER_BREAKER_FAILURES="1",
            OPENMETER_BREAKER_RESET="0.5",
            OPENMETER_BACKOFF_BASE="0.05",
            OPENMETER_BACKOFF_MAX="0.2",
        )
        projector = ConsumerProcess(
            "project-tiers",
            ["--nats-url", stream.url],
            {},
            tmp_path / "projector",
            ready="stripe_bridge_tiers_consumer_lag",
        )
        lifecycle_projector = ConsumerProcess(
            "project-lifecycle",
            ["--nats-url", stream.url],
            {},
            tmp_path / "lifecycle",
            ready="stripe_bridge_lifecycle_consumer_lag",
        )
        counter = ConsumerProcess(
            "count-usage",
            ["--nats-url", stream.url],
            {},
            tmp_path / "counter",
            ready="stripe_bridge_usage_counter_partitions",
        )
        entitlements = FunctionProcess(
            "billing_entitlements", {"NATS_URL": stream.url}, tmp_path / "fn", REPO_ROOT
        )
        pushgateway = PushgatewayServer(tmp_path / "pushgateway")
        others = {
            LIFECYCLE_JOB: f"127.0.0.1:{lifecycle_projector.metrics_port}",
            COUNTER_JOB: f"127.0.0.1:{counter.metrics_port}",
            "billing-entitlements": f"127.0.0.1:{entitlements.port}",
        }
        config = scrape_config(forwarder, projector, others, f"127.0.0.1:{pushgateway.port}")
        prometheus = PrometheusServer(tmp_path / "prometheus", config)
        started: list[ManagedProcess | PrometheusComponent] = []
        try:
            for process in (forwarder, projector, lifecycle_projector, counter, entitlements):
                process.start()  # the forwarder provisions USAGE before anything is published
                started.append(process)
            for component in (pushgateway, prometheus):
                component.start()
                started.append(component)
            # Publish only after a first scrape saw every counter and histogram at 0: rate()
            # counts increments between samples, so a burst before it would read as no traffic.
            up = "sum(up)"
            wait_until(lambda: scalar(prometheus, up) == 6, 20, "first scrape of every target")
            asyncio.run(publish(stream.url, records(USAGE_EVENTS)))
            asyncio.run(publish_deliveries(stream.url, lifecycle()))
            asyncio.run(publish(stream.url, one_record_per_meter()))
            check = {"customer": "cus_dash", "meter": "api_calls", "quantity": 1}
            assert (
                httpx.post(entitlements.url + "v1/check", json=check, timeout=5).status_code == 200
            )
            backup = ["export", "--all", "--dir", str(tmp_path / "backups"), "--nats-url"]
            backup += [stream.url, "--pushgateway", pushgateway.url, "--environment", "production"]
            assert main(backup) == 0
            total = USAGE_EVENTS + len(DEFAULT_TIERS.meters)
            wait_until(lambda: len(ingest.counts()) >= total, 20, "usage in OpenMeter")
            sent = f'sum(stripe_bridge_openmeter_events_sent_total{{job="{FORWARDER_JOB}"}})'
            wait_until(lambda: (scalar(prometheus, sent) or 0) >= total, 20, "sent scraped")
            # No application embedding the entitlements client runs here (its collector's
            # names are tests/entitlements/test_client.py's).
            client = ("Entitlements client staleness",)
            assert_every_panel_has_data(
                prometheus, "billing.json", at_least=30, timeout=30, skip=client
            )
            breaker = "stripe_bridge_openmeter_breaker_transitions_total"
            assert scalar(prometheus, f'sum({breaker}{{state="open"}})') == 1
            assert scalar(prometheus, f'sum({breaker}{{state="closed"}})') == 1
            assert scalar(prometheus, "max(stripe_bridge_tiers_consumer_lag)") == 0
        finally:
            for item in reversed(started):
                item.stop()


def one_record_per_meter() -> list[UsageRecord]:
    """A usage record of every meter of the shipped tier file."""
    return [
        UsageRecord(meter=meter, customer_id="cus_dash", value=1, id=f"dash-{meter}")
        for meter in DEFAULT_TIERS.meters
    ]
