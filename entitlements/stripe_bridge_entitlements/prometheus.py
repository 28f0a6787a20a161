"""The client's counts and staleness as Prometheus metrics, for an application serving
``/metrics`` with prometheus_client (not a dependency of this distribution: import this
module only where prometheus_client is installed)::

    from prometheus_client import REGISTRY
    from stripe_bridge_entitlements.prometheus import ClientCollector

    REGISTRY.register(ClientCollector(client))

The client lives in the application's process, so the application's own scrape job
collects these; the shipped alerts (``EntitlementsClient*``, docs/runbook.md) match these
names whatever that job is called.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from .client import EntitlementsClient

#: Metric names (counters gain ``_total`` in the exposition). Checks and reservations are
#: one family (label ``kind``), so that one rate adds them up.
ANSWERS = "stripe_bridge_entitlements_client_answers"
USAGE_RECORDS = "stripe_bridge_entitlements_client_usage_records"
UPDATES = "stripe_bridge_entitlements_client_updates"
STALENESS = "stripe_bridge_entitlements_client_staleness_seconds"


class ClientCollector(Collector):
    """Reads ``client.metrics`` and ``client.staleness`` at each scrape (nothing on the
    check's hot path)."""

    def __init__(self, client: EntitlementsClient) -> None:
        self.client = client

    def collect(self) -> Iterator[Metric]:
        """Answers by kind and decision, usage records, updates; staleness as a gauge."""
        snapshot = self.client.metrics.snapshot()
        answers = CounterMetricFamily(
            ANSWERS,
            "check() and reserve() answers by kind (check, reserve) and decision "
            "(allowed, denied, degraded_allowed, degraded_denied: by when_unavailable).",
            labels=["kind", "decision"],
        )
        for kind, key in (("check", "checks"), ("reserve", "reservations")):
            for decision, count in snapshot[key].items():
                answers.add_metric([kind, decision], count)
        yield answers
        yield CounterMetricFamily(
            USAGE_RECORDS, "Usage records published.", value=snapshot["usage_records"]
        )
        yield CounterMetricFamily(
            UPDATES, "KV changes applied to memory.", value=snapshot["updates"]
        )
        yield GaugeMetricFamily(
            STALENESS,
            "Seconds since memory stopped being kept current (0 while current).",
            value=self.client.staleness,
        )
