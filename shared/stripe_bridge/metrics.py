"""The bridge's Prometheus metrics, kept in a registry per runtime (tests make their own).

Names follow Prometheus' rules: ``stripe_bridge_`` namespace, base units (seconds),
``_total`` on counters. The list is rendered into docs/observability.md by a test.
"""

from __future__ import annotations

import os
import time

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
)

# ``*_created`` series double every counter on the Pushgateway and no query here uses them.
disable_created_metrics()  # type: ignore[no-untyped-call]

#: Latency buckets around Stripe's ~30 s delivery timeout and a PubAck's milliseconds.
_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


def process_start_time() -> float:
    """Unix time this process started (from /proc on Linux, else now)."""
    try:
        with open("/proc/self/stat") as stat, open("/proc/uptime") as uptime:
            # Field 22 counts clock ticks from boot; the command name may contain spaces.
            ticks = int(stat.read().rsplit(")", 1)[1].split()[19])
            up = float(uptime.read().split()[0])
        return time.time() - up + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return time.time()


class BridgeMetrics:
    """Every metric a bridge process exposes (on /metrics and to the Pushgateway)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.webhooks = Counter(
            "stripe_bridge_webhooks",
            "Webhook deliveries handled, by Stripe event type, outcome and reason.",
            ["event_type", "outcome", "reason"],
            registry=r,
        )
        self.signature_failures = Counter(
            "stripe_bridge_signature_failures",
            "Deliveries refused because the Stripe-Signature did not verify.",
            ["reason"],
            registry=r,
        )
        self.translation_failures = Counter(
            "stripe_bridge_translation_failures",
            "Events published untranslated because their translation raised.",
            ["event_type"],
            registry=r,
        )
        self.publish_failures = Counter(
            "stripe_bridge_publish_failures",
            "JetStream publishes that got no PubAck.",
            ["reason"],
            registry=r,
        )
        self.idempotency_errors = Counter(
            "stripe_bridge_idempotency_errors",
            "Idempotency store operations that failed.",
            ["backend", "operation"],
            registry=r,
        )
        self.publish_seconds = Histogram(
            "stripe_bridge_publish_duration_seconds",
            "Time from JetStream publish to PubAck.",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.request_seconds = Histogram(
            "stripe_bridge_request_duration_seconds",
            "Time to answer a webhook delivery, end to end, by outcome.",
            ["outcome"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.nats_connected = Gauge(
            "stripe_bridge_nats_connected",
            "1 while the process's NATS connection is up, else 0.",
            registry=r,
        )
        self.inflight = Gauge(
            "stripe_bridge_inflight_requests",
            "Webhook deliveries being handled right now.",
            registry=r,
        )
        self.start_time = Gauge(
            "stripe_bridge_process_start_time_seconds",
            "Unix time the bridge process started (a new value is a cold start).",
            registry=r,
        )
        self.cold_start_seconds = Gauge(
            "stripe_bridge_cold_start_seconds",
            "Time from process start to its first acknowledged event.",
            registry=r,
        )
        self._started = process_start_time()
        self.start_time.set(self._started)
        self._first_ack_seen = False

    def first_ack(self) -> None:
        """Record the cold start the first time this process stores an event."""
        if not self._first_ack_seen:
            self._first_ack_seen = True
            self.cold_start_seconds.set(max(0.0, time.time() - self._started))

    def set_nats_connected(self, connected: bool) -> None:
        """Callback for the publisher's connection changes."""
        self.nats_connected.set(1 if connected else 0)
