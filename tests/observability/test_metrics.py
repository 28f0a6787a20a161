"""Metric definitions: names, zero-initialised series and what /metrics serves."""

from __future__ import annotations

import httpx
import pytest
from prometheus_client import generate_latest
from stripe_bridge import registry
from stripe_bridge.metrics import (
    PUBLISH_FAILURE_REASONS,
    BridgeMetrics,
    served_event_types,
)
from stripe_bridge.reasons import SIGNATURE_REASONS, UNKNOWN_TYPE, Reason

from ..conftest import FunctionFactory


def test_names_follow_prometheus_conventions() -> None:
    for metric in BridgeMetrics().collectors():
        name = metric._name
        assert name.startswith("stripe_bridge_")
        assert not name.endswith("_total"), "prometheus_client appends _total to counters"
        if metric._type == "histogram" or "time" in name:
            assert name.endswith("_seconds"), name


def test_served_event_types_follow_the_registry() -> None:
    assert served_event_types("invoice_paid") == ["invoice.paid"]
    everything = [t.name for t in registry.EVENT_TYPES]
    assert served_event_types(registry.CATCH_ALL) == everything
    assert served_event_types("dev") == everything


def test_every_reason_is_created_at_zero() -> None:
    # A reason first counted at 1 is invisible to rate() and its panel says "no data".
    # Every refusal on the request path is a Reason (stripe_bridge.reasons), so the enum
    # is the list: before the type is known under "unknown", else under each served type.
    metrics = BridgeMetrics()
    metrics.preinitialise(["invoice.paid"], "redis")
    value = metrics.registry.get_sample_value
    for reason in Reason:
        if reason is Reason.UNSUPPORTED_EVENT_TYPE:  # counted under a type nobody serves
            continue
        event_type = "invoice.paid" if reason.about_event else UNKNOWN_TYPE
        labels = {"event_type": event_type, "outcome": reason.outcome, "reason": reason.value}
        assert value("stripe_bridge_webhooks_total", labels) == 0, reason
    for reason in PUBLISH_FAILURE_REASONS:
        assert value("stripe_bridge_publish_failures_total", {"reason": reason.value}) == 0
    for signature in SIGNATURE_REASONS:
        assert value("stripe_bridge_signature_failures_total", {"reason": signature.value}) == 0
    labels = {"backend": "redis", "operation": "mark_done"}
    assert value("stripe_bridge_idempotency_errors_total", labels) == 0
    assert b"_created" not in generate_latest(metrics.registry)


@pytest.mark.servers  # serves /metrics
def test_metrics_endpoint_serves_zeros_before_any_delivery(
    start_function: FunctionFactory,
) -> None:
    fn = start_function("invoice_paid")
    text = httpx.get(fn.url + "metrics", timeout=5).text
    assert 'stripe_bridge_publish_failures_total{reason="nats_unavailable"} 0.0' in text
    assert (
        'stripe_bridge_webhooks_total{event_type="invoice.paid",outcome="published",reason=""} 0.0'
        in text
    )
    # A single-type function does not create series for types it never serves.
    assert 'event_type="checkout.session.completed"' not in text
