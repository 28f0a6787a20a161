"""Billing consumers on payloads of every Stripe API era (tests/billing/eras.py).

The same subscription and invoice, in the shapes of 2017-08-15 to the newest, must give
the same lifecycle events with their amounts and the same tier; ``invoice.paid`` and
``invoice.payment_succeeded`` for one invoice give one ``payment.success``.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from typing import Any

import pytest
from stripe_bridge.billing.lifecycle import fact_from_event
from stripe_bridge.billing.lifecycle_projector import LifecycleProjector
from stripe_bridge.billing.tiers import TierConfig, TierDefinition, apply, update_from_event
from stripe_bridge.billing.usage import provision_usage_streams
from stripe_bridge.envelope import StripeEvent
from stripe_bridge.ops.backup import iter_stream
from stripe_bridge.ops.natsserver import NatsServer
from stripe_bridge.streams import USAGE_STREAM
from stripe_bridge_testing.waiting import wait_until_async

from .eras import AMOUNT, CUSTOMER, ERAS, PRICE, era_event
from .sequences import T0
from .test_projector import publish_deliveries

#: The era examples carry no lookup key before 2020; the price id is what makes them "pro".
ERA_CONFIG = TierConfig(
    tiers=[TierDefinition(name="free"), TierDefinition(name="pro", price_ids=[PRICE])]
)
#: Lifecycle data that must not depend on the era (ids, periods and event ids do).
SAME_IN_EVERY_ERA = (
    "amount",
    "amount_due",
    "amount_paid",
    "currency",
    "price_id",
    "product_id",
    "quantity",
    "status",
)


def history(era: str, index: int) -> list[dict[str, Any]]:
    """One subscription's start, a failed payment, then both success events of the retry."""
    sub, inv = f"sub_era{index}", f"in_era{index}"
    events = [
        ("customer.subscription.created", "created"),
        ("invoice.payment_failed", "failed"),
        ("invoice.payment_succeeded", "succeeded"),
        ("invoice.paid", "paid"),
    ]
    return [
        era_event(era, event_type, f"evt_era{index}_{name}", T0 + step, sub, invoice_id=inv)
        for step, (event_type, name) in enumerate(events)
    ]


@pytest.mark.parametrize(
    "event_type", ["customer.subscription.updated", "invoice.payment_failed", "invoice.paid"]
)
def test_lifecycle_data_is_the_same_in_every_era(event_type: str) -> None:
    seen = []
    for era in ERAS:
        fact = fact_from_event(
            StripeEvent.model_validate(era_event(era, event_type, "evt_e", T0, "sub_e"))
        )
        assert fact is not None, era
        seen.append({key: fact.data.get(key) for key in SAME_IN_EVERY_ERA})
    assert all(data == seen[0] for data in seen), list(zip(ERAS, seen, strict=True))
    if event_type.startswith("customer.subscription"):
        assert (seen[0]["amount"], seen[0]["price_id"]) == (AMOUNT, PRICE)
    else:
        assert (seen[0]["amount_due"], seen[0]["price_id"]) == (AMOUNT, PRICE)


@pytest.mark.parametrize("era", ERAS)
def test_every_era_projects_the_same_tier(era: str) -> None:
    event = StripeEvent.model_validate(
        era_event(era, "customer.subscription.updated", "evt_t", T0, "sub_t")
    )
    update = update_from_event(event, ERA_CONFIG)
    assert update is not None
    assert apply(None, update, ERA_CONFIG).tier == "pro"


async def lifecycle_published(url: str) -> list[dict[str, Any]]:
    """Every lifecycle CloudEvent in USAGE, in stream order."""
    import nats

    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        return [
            json.loads(msg.data)
            async for msg in iter_stream(js, USAGE_STREAM, subject="usage.lifecycle.>")
        ]
    finally:
        await nc.close()


async def test_project_lifecycle_sends_every_era_once_with_amounts(stream: NatsServer) -> None:
    import nats

    sent = [event for index, era in enumerate(ERAS) for event in history(era, index)]
    await publish_deliveries(stream.url, sent)
    nc = await nats.connect(stream.url)
    try:
        await provision_usage_streams(nc.jetstream())
        projector = LifecycleProjector(nc, batch_size=5)
        stop = asyncio.Event()
        task = asyncio.create_task(projector.run(stop, fetch_wait=0.2))
        expected = 3 * len(ERAS)  # started, failed, one success per era
        try:
            # Lag 0 and nothing pending: every delivery was handled (not just the first ones).
            async def handled() -> bool:
                total = sum(
                    s.value
                    for metric in projector.metrics.registry.collect()
                    for s in metric.samples
                    if s.name == "stripe_bridge_lifecycle_events_total"
                )
                return total >= len(sent)

            await wait_until_async(handled, 30, "every era event handled")
        finally:
            stop.set()
            await task
    finally:
        await nc.close()
    published = await lifecycle_published(stream.url)
    assert len(published) == expected
    for index, era in enumerate(ERAS):
        mine = [e for e in published if e["data"]["stripe_event_id"].startswith(f"evt_era{index}_")]
        assert Counter(e["type"] for e in mine) == {
            "subscription.started": 1,
            "payment.failed": 1,
            "payment.success": 1,
        }, era
        by_type = {e["type"]: e for e in mine}
        assert all(e["subject"] == CUSTOMER for e in mine)
        assert by_type["subscription.started"]["data"]["amount"] == AMOUNT, era
        assert by_type["payment.failed"]["data"]["amount_due"] == AMOUNT, era
        assert by_type["payment.success"]["data"]["amount_paid"] == AMOUNT, era
        assert by_type["payment.success"]["id"] == f"inv.in_era{index}.payment.success"
