"""End to end: the billing consumers as processes -> Prometheus, every billing panel has data.

A real nats-server, ``forward-openmeter`` feeding tests/billing's OpenMeter ingest stand-in
(one scripted 503 so the breaker opens and closes once), ``project-tiers`` projecting real
Stripe payloads, and a real Prometheus scraping both ``--metrics-port`` endpoints every
second under the scrape jobs the alerts expect, labelled ``environment`` as the Kubernetes
scrape config in docs/observability.md labels them.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from stripe_bridge.deploy.alerts import FORWARDER_JOB, PROJECTOR_JOB
from stripe_bridge.natsserver import NatsServer
from stripe_bridge_testing.openmeter_standin import IngestStandIn
from stripe_bridge_testing.processes import PrometheusServer
from stripe_bridge_testing.waiting import wait_until

from ..billing.conftest import API_KEY, ConsumerProcess, ForwarderProcess, publish, records
from ..billing.sequences import lifecycle
from ..billing.test_projector import publish_deliveries
from .test_e2e import assert_every_panel_has_data, scalar

USAGE_EVENTS = 60


def scrape_config(forwarder: ConsumerProcess, projector: ConsumerProcess) -> str:
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
        prometheus = PrometheusServer(tmp_path / "prometheus", scrape_config(forwarder, projector))
        try:
            forwarder.start()  # provisions the USAGE streams before anything is published
            projector.start()
            prometheus.start()
            # Publish only after a first scrape saw every counter and histogram at 0: rate()
            # counts increments between samples, so a burst before it would read as no traffic.
            up = f'sum(up{{job=~"{FORWARDER_JOB}|{PROJECTOR_JOB}"}})'
            wait_until(lambda: scalar(prometheus, up) == 2, 20, "first scrape of both consumers")
            asyncio.run(publish(stream.url, records(USAGE_EVENTS)))
            asyncio.run(publish_deliveries(stream.url, lifecycle()))
            wait_until(lambda: len(ingest.counts()) == USAGE_EVENTS, 20, "usage in OpenMeter")
            sent = f'sum(stripe_bridge_openmeter_events_sent_total{{job="{FORWARDER_JOB}"}})'
            wait_until(lambda: scalar(prometheus, sent) == USAGE_EVENTS, 20, "sent scraped")
            assert_every_panel_has_data(prometheus, "billing.json", at_least=15, timeout=20)
            breaker = "stripe_bridge_openmeter_breaker_transitions_total"
            assert scalar(prometheus, f'sum({breaker}{{state="open"}})') == 1
            assert scalar(prometheus, f'sum({breaker}{{state="closed"}})') == 1
            assert scalar(prometheus, "max(stripe_bridge_tiers_consumer_lag)") == 0
        finally:
            prometheus.stop()
            projector.stop()
            forwarder.stop()
