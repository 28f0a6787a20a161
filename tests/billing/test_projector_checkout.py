"""Stripe's real order on real nats-server: the later Checkout must not reset the tier in KV."""

from __future__ import annotations

import pytest
from stripe_bridge.billing.projector import read_state, tiers_bucket
from stripe_bridge.ops.natsserver import NatsServer

from .sequences import CUSTOMER, SUB_A, T0, checkout_event, subscription_event
from .test_projector import publish_deliveries, run_projectors


@pytest.mark.parametrize("session_tier", [None, "teams"])
async def test_checkout_after_subscription_created_keeps_the_subscription_in_kv(
    stream: NatsServer, session_tier: str | None
) -> None:
    import nats

    created = subscription_event(
        "evt_s1", "customer.subscription.created", T0, SUB_A, "active", "pro_monthly"
    )
    session = checkout_event("evt_c1", T0 + 1, SUB_A, session_tier)
    sent = await publish_deliveries(stream.url, [created, session])
    await run_projectors(stream.url, sent, ["tiers"])
    nc = await nats.connect(stream.url)
    try:
        state, _ = await read_state(await tiers_bucket(nc.jetstream()), CUSTOMER)
    finally:
        await nc.close()
    assert state is not None and state.tier == "pro"
    record = state.subscriptions[SUB_A]
    assert (record.status, record.tier, record.cause.event_id) == ("active", "pro", "evt_s1")
