"""runtime.py: the composition root builds a function's parts once, and connects nothing."""

from __future__ import annotations

import asyncio

from stripe_bridge.config import Settings
from stripe_bridge.runtime import Runtime

#: Nothing listens here: a connection attempt would fail (and the unit guard would see it).
NOWHERE = "nats://127.0.0.1:1"


def webhooks(runtime: Runtime, event_type: str) -> float | None:
    labels = {"event_type": event_type, "outcome": "published", "reason": ""}
    return runtime.collectors.get_sample_value("stripe_bridge_webhooks_total", labels)


def test_construction_connects_nothing_and_close_is_safe_before_use() -> None:
    runtime = Runtime(Settings(nats_url=NOWHERE), "invoice_paid")
    assert not runtime.publisher.connected
    assert runtime.pusher is None  # no PUSHGATEWAY_URL: only /metrics shows them
    assert runtime.store.backend == "memory"
    assert runtime.collectors is runtime.metrics.registry
    asyncio.run(runtime.close())


def test_series_exist_at_zero_for_the_served_types_only() -> None:
    runtime = Runtime(Settings(nats_url=NOWHERE), "invoice_paid")
    assert webhooks(runtime, "invoice.paid") == 0
    assert webhooks(runtime, "customer.subscription.created") is None
    everything = Runtime(Settings(nats_url=NOWHERE), "stripe_event")
    assert webhooks(everything, "customer.subscription.created") == 0


def test_the_configured_function_name_wins_in_the_pushed_group() -> None:
    settings = Settings(
        nats_url=NOWHERE,
        function_name="paid-eu",
        pushgateway_url="http://127.0.0.1:1",
        instance_id="pod-1",
    )
    runtime = Runtime(settings, "invoice_paid")
    assert runtime.function_name == "paid-eu"
    assert runtime.pusher is not None
    assert runtime.pusher.grouping_key["function"] == "paid-eu"
    assert runtime.pusher.grouping_key["instance"] == "pod-1"
    assert webhooks(runtime, "invoice.paid") == 0  # still the function's own types
