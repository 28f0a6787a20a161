"""Metric definitions: names, zero-initialised series and what /metrics serves."""

from __future__ import annotations

import inspect
import re

import httpx
import pytest
from prometheus_client import generate_latest
from stripe_bridge import http, ingest, registry, webhook
from stripe_bridge.metrics import (
    EARLY_FAILED_REASONS,
    EVENT_REJECTED_REASONS,
    FAILED_REASONS,
    REJECTED_REASONS,
    UNKNOWN_TYPE,
    BridgeMetrics,
    served_event_types,
)
from stripe_bridge.signature import SignatureFailure

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


def test_every_reason_the_handler_gives_is_preinitialised() -> None:
    # Drift guard: a new refusal on the request path (http.py, webhook.py, ingest.py) must be
    # created at zero too, or its first occurrence is invisible to rate() and its panel says
    # "no data".
    source = "".join(inspect.getsource(module) for module in (http, webhook, ingest))
    refusals = r'(?:_rejected\(|refusal\(\d+,)\s*"(\w+)"'
    rejected = set(re.findall(refusals, source)) - {"unsupported_event_type"}
    failed = set(re.findall(r'reason = "(\w+)"', source)) | set(re.findall(r'else "(\w+)"', source))
    assert {"method_not_allowed", "body_too_large", "malformed_json"} <= rejected
    assert "idempotency_unavailable" in failed
    # shutting_down is a refusal() of the shell too, counted as failed (503).
    assert rejected <= {*REJECTED_REASONS, *EVENT_REJECTED_REASONS, *EARLY_FAILED_REASONS}
    assert failed <= {*FAILED_REASONS, *EARLY_FAILED_REASONS}
    metrics = BridgeMetrics()
    metrics.preinitialise(["invoice.paid"], "redis")
    value = metrics.registry.get_sample_value
    for reason in (*REJECTED_REASONS, *(f.value for f in SignatureFailure)):
        labels = {"event_type": UNKNOWN_TYPE, "outcome": "rejected", "reason": reason}
        assert value("stripe_bridge_webhooks_total", labels) == 0
    for reason in FAILED_REASONS:
        labels = {"event_type": "invoice.paid", "outcome": "failed", "reason": reason}
        assert value("stripe_bridge_webhooks_total", labels) == 0
    for reason in EVENT_REJECTED_REASONS:
        labels = {"event_type": "invoice.paid", "outcome": "rejected", "reason": reason}
        assert value("stripe_bridge_webhooks_total", labels) == 0
    for reason in EARLY_FAILED_REASONS:
        labels = {"event_type": UNKNOWN_TYPE, "outcome": "failed", "reason": reason}
        assert value("stripe_bridge_webhooks_total", labels) == 0
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
