"""The bridge's Prometheus metrics, kept in a registry per runtime (tests make their own).

Names follow Prometheus' rules: ``stripe_bridge_`` namespace, base units (seconds),
``_total`` on counters, labels with small, known value sets. Every series whose labels are
known in advance is created at zero when the runtime starts (``preinitialise``): a counter
that first appears at 1 hides that first increment from ``rate()``/``increase()``, and a
series that does not exist yet leaves dashboards and alerts with "no data" instead of 0.
The list is rendered into docs/observability.md (``metrics_table``, also for the billing
consumers' registries), which a test keeps in step.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
)
from prometheus_client.metrics import MetricWrapperBase

from . import registry as event_registry
from .reasons import SIGNATURE_REASONS, UNKNOWN_TYPE, Reason

# ``*_created`` series double every counter on the Pushgateway and no query here uses them.
disable_created_metrics()  # type: ignore[no-untyped-call]

#: Latency buckets around Stripe's ~30 s delivery timeout and a PubAck's milliseconds.
_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)

#: Outcomes of a delivery (the ``outcome`` label) that carry no reason.
PLAIN_OUTCOMES = ("published", "duplicate", "in_progress")
#: Reasons counted under the event's type (the ones about storing it); the others come
#: before the type is known and are counted under ``unknown``. A refused foreign type is
#: counted under that type, which no function serves: nothing to create in advance.
EVENT_REASONS = tuple(r for r in Reason if r.about_event and r is not Reason.UNSUPPORTED_EVENT_TYPE)
EARLY_REASONS = tuple(r for r in Reason if not r.about_event)
#: Reasons of a publish without PubAck (the ``reason`` label of publish failures).
PUBLISH_FAILURE_REASONS = tuple(
    r for r in EVENT_REASONS if r.status >= 500 and r is not Reason.IDEMPOTENCY_UNAVAILABLE
)
IDEMPOTENCY_OPERATIONS = ("claim", "mark_done", "release")
#: Reasons of a failed metrics push (the ``reason`` label of push failures).
PUSH_FAILURE_REASONS = ("unreachable", "timeout", "rejected")


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


def served_event_types(function_name: str) -> list[str]:
    """The registered event types ``function_name`` serves; all of them for the catch-all/dev."""
    served = [t.name for t in event_registry.EVENT_TYPES if t.function_name == function_name]
    return served or [t.name for t in event_registry.EVENT_TYPES]


class BridgeMetrics:
    """Every metric a bridge process exposes (on /metrics and to the Pushgateway)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.webhooks = Counter(
            "stripe_bridge_webhooks",
            "Webhook deliveries answered, by Stripe event type, outcome and reason.",
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
        self.push_failures = Counter(
            "stripe_bridge_push_failures",
            "Metrics pushes to the Pushgateway that failed (seen at the next successful push).",
            ["reason"],
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
        self.clock_skew = Gauge(
            "stripe_bridge_signature_clock_skew_seconds",
            "This host's clock minus the timestamp of the last authentic Stripe-Signature "
            "(delivery latency plus clock skew; refused deliveries included).",
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
            "Unix time the bridge process started (a new series is a cold start).",
            registry=r,
        )
        self.cold_start_seconds = Gauge(
            "stripe_bridge_cold_start_seconds",
            "Time from process start to its first acknowledged event (0 until then).",
            registry=r,
        )
        self._started = process_start_time()
        self.start_time.set(self._started)
        self._first_ack_seen = False
        # Label children per (event_type, outcome, reason): ``labels()`` costs a lock and a
        # few string conversions per call, and every delivery counts into two of them.
        self._delivery_children: dict[tuple[str, str, str], tuple[Counter, Histogram]] = {}

    def delivered(self, event_type: str, outcome: str, reason: str, seconds: float) -> None:
        """Count one answered delivery and its duration."""
        key = (event_type, outcome, reason)
        children = self._delivery_children.get(key)
        if children is None:
            children = (self.webhooks.labels(*key), self.request_seconds.labels(outcome))
            self._delivery_children[key] = children
        children[0].inc()
        children[1].observe(seconds)

    def preinitialise(self, event_types: Iterable[str], backend: str) -> None:
        """Create at zero every series whose labels are known before the first delivery."""
        for event_type in event_types:
            for outcome in PLAIN_OUTCOMES:
                self.webhooks.labels(event_type, outcome, "")
            for known in EVENT_REASONS:
                self.webhooks.labels(event_type, known.outcome, known.value)
            self.translation_failures.labels(event_type)
        for early in EARLY_REASONS:
            self.webhooks.labels(UNKNOWN_TYPE, early.outcome, early.value)
        for signature in SIGNATURE_REASONS:
            self.signature_failures.labels(signature.value)
        for publish in PUBLISH_FAILURE_REASONS:
            self.publish_failures.labels(publish.value)
        for operation in IDEMPOTENCY_OPERATIONS:
            self.idempotency_errors.labels(backend, operation)
        for push in PUSH_FAILURE_REASONS:
            self.push_failures.labels(push)
        for outcome in (*PLAIN_OUTCOMES, "rejected", "failed"):
            self.request_seconds.labels(outcome)

    def first_ack(self) -> None:
        """Record the cold start the first time this process stores an event."""
        if not self._first_ack_seen:
            self._first_ack_seen = True
            self.cold_start_seconds.set(max(0.0, time.time() - self._started))

    def set_nats_connected(self, connected: bool) -> None:
        """Callback for the publisher's connection changes."""
        self.nats_connected.set(1 if connected else 0)

    def collectors(self) -> list[MetricWrapperBase]:
        """Every metric object, in declaration order."""
        return metric_attributes(self)


def metric_attributes(holder: object) -> list[MetricWrapperBase]:
    """The metric objects among ``holder``'s attributes, in declaration order.

    Works for every class that keeps its metrics as attributes (BridgeMetrics and the billing
    consumers' ForwarderMetrics and ProjectorMetrics).
    """
    return [m for m in vars(holder).values() if isinstance(m, MetricWrapperBase)]


def _exposed_name(metric: MetricWrapperBase) -> str:
    # prometheus_client keeps counters' names without ``_total`` and appends it on exposition.
    name: str = metric._name
    return f"{name}_total" if metric._type == "counter" else name


def metrics_table(metrics: Iterable[MetricWrapperBase] | None = None) -> str:
    """The Markdown table of ``metrics`` (default: the bridge's) for docs/observability.md."""
    rows = ["| metric | type | labels | meaning |", "| --- | --- | --- | --- |"]
    for metric in BridgeMetrics().collectors() if metrics is None else metrics:
        labels = ", ".join(f"`{label}`" for label in metric._labelnames) or "-"
        rows.append(
            f"| `{_exposed_name(metric)}` | {metric._type} | {labels} | {metric._documentation} |"
        )
    return "\n".join(rows) + "\n"
