"""Lifecycle events end to end: STRIPE -> project-lifecycle -> USAGE -> forward-openmeter.

Real nats-server (stream, consumers, KV compare-and-set), the OpenMeter ingest stand-in.
"""

from __future__ import annotations

import asyncio
import random
from pathlib import Path
from typing import Any

import pytest
from stripe_bridge.billing.lifecycle import Gate, Lifecycle, LifecycleEvent, fact_from_event
from stripe_bridge.billing.lifecycle_projector import (
    LIFECYCLE_BUCKET,
    LifecycleProjector,
    pass_gate,
)
from stripe_bridge.billing.stripe_consumer import key_value
from stripe_bridge.billing.usage import provision_usage_streams
from stripe_bridge.envelope import StripeEvent
from stripe_bridge.ops.natsserver import NatsServer
from stripe_bridge_testing.consumer_processes import ConsumerProcess
from stripe_bridge_testing.openmeter_standin import IngestStandIn
from stripe_bridge_testing.waiting import wait_until, wait_until_async

from ..conftest import WriteBetween
from .conftest import forwarder_settings, running_forwarder
from .lifecycle_oracle import check_downstream, random_billing_history
from .sequences import SUB_A, T0, deliveries, subscription_event
from .test_lifecycle import downstream, send
from .test_projector import publish_deliveries


def received(ingest: IngestStandIn) -> list[str]:
    """Ids OpenMeter accepted, first arrival of each, in order."""
    return list(dict.fromkeys(event_id for event_id, _ in ingest.accepted))


@pytest.mark.parametrize("seed", [7, 8])
async def test_shuffled_deliveries_reach_openmeter_in_rule_order(
    stream: NatsServer, ingest: IngestStandIn, seed: int
) -> None:
    import nats

    rng = random.Random(seed)
    history = random_billing_history(rng, 25)
    delivered = deliveries(history, rng)
    expected = set(downstream(send(delivered)))
    await publish_deliveries(stream.url, delivered)
    nc = await nats.connect(stream.url)
    try:
        js = nc.jetstream()
        await provision_usage_streams(js)
        # A crash after the gate's write and before the publish: the redelivery must
        # publish what the gate let through.
        first = fact_from_event(StripeEvent.model_validate(delivered[0]))
        assert first is not None
        assert await pass_gate(await key_value(js, LIFECYCLE_BUCKET), first)
        projector = LifecycleProjector(nc, batch_size=7)
        stop = asyncio.Event()
        task = asyncio.create_task(projector.run(stop, fetch_wait=0.2))
        try:
            async with running_forwarder(stream.url, forwarder_settings(ingest)):
                await wait_until_async(
                    lambda: set(received(ingest)) >= expected, 30, "lifecycle events ingested"
                )
        finally:
            stop.set()
            await task
    finally:
        await nc.close()
    assert set(received(ingest)) == expected
    check_downstream(history, received(ingest))
    sources = {source for _, source in ingest.accepted}
    assert sources == {"stripe-bridge/lifecycle"}


async def test_two_facts_racing_on_one_gate_are_both_decided_once(
    nats_server: NatsServer, lost_writes: list[str], write_between: WriteBetween
) -> None:
    import nats

    facts = [
        fact_from_event(StripeEvent.model_validate(subscription_event(*event)))
        for event in [
            ("evt_r1", "customer.subscription.created", T0, SUB_A, "active"),
            ("evt_r2", "customer.subscription.deleted", T0 + 60, SUB_A, "canceled"),
        ]
    ]
    first, second = (fact for fact in facts if fact)
    sent: list[list[LifecycleEvent]] = []

    async def first_passes(kv: Any) -> None:
        sent.append(await pass_gate(kv, first))

    nc = await nats.connect(nats_server.url)
    try:
        kv = await key_value(nc.jetstream(), LIFECYCLE_BUCKET)
        # The first fact passes between the second's read of the absent gate and its write:
        # that write loses and is decided again on the first's gate, so the start is sent
        # once, not by both.
        write_between(first_passes)
        sent.append(await pass_gate(kv, second))
        gate = Gate.model_validate_json((await kv.get(f"sub.{SUB_A}")).value)
    finally:
        await nc.close()
    assert lost_writes == [f"sub.{SUB_A}"]
    kinds = sorted(event.type for events in sent for event in events)
    assert kinds == [Lifecycle.ENDED, Lifecycle.STARTED]
    assert gate.started and gate.ended


def test_project_lifecycle_process_publishes_and_stops_on_sigterm(
    stream: NatsServer, tmp_path: Path
) -> None:
    import nats

    up = "customer.subscription.updated"
    events = [
        subscription_event("evt_1", "customer.subscription.created", T0, SUB_A, "active"),
        subscription_event("evt_2", up, T0 + 5, SUB_A, "past_due"),
        subscription_event("evt_1", "customer.subscription.created", T0, SUB_A, "active"),
    ]
    asyncio.run(publish_deliveries(stream.url, events))
    process = ConsumerProcess(
        "project-lifecycle",
        ["--nats-url", stream.url],
        {},
        tmp_path,
        ready="stripe_bridge_lifecycle_consumer_lag",
    ).start()

    async def usage_subjects() -> list[str]:
        nc = await nats.connect(stream.url)
        try:
            info = await nc.jetstream().stream_info("USAGE", subjects_filter=">")
            return sorted((info.state.subjects or {}).keys())
        finally:
            await nc.close()

    expected = ["usage.lifecycle.subscription.started", "usage.lifecycle.subscription.updated"]
    try:
        wait_until(lambda: asyncio.run(usage_subjects()) == expected, 20, "lifecycle published")
    finally:
        code = process.stop()
    assert code == 0
    assert "project-lifecycle stopped" in process.log()
