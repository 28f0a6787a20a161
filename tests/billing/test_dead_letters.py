"""No STRIPE consumer drops a message: what it cannot use is dead-lettered, then redriven.

Real nats-server: the STRIPE stream, STRIPE_DLQ, the consumers' durables; ``redrive`` as
the command runs it. The "bug" is the one of issue #18: a lifecycle projector requiring
``amount_remaining``, which 2017-08-15 invoices do not have.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from stripe_bridge.billing.lifecycle import Fact
from stripe_bridge.billing.lifecycle_projector import LifecycleProjector
from stripe_bridge.billing.projector import TierProjector
from stripe_bridge.billing.usage import provision_usage_streams
from stripe_bridge.envelope import StripeEvent
from stripe_bridge.ops.backup import iter_stream
from stripe_bridge.ops.natsserver import NatsServer
from stripe_bridge.streams import USAGE_STREAM
from stripe_bridge_events.deadletter import DEAD_LETTER_STREAM, REASON_HEADER, SOURCE_HEADER
from stripe_bridge_testing.cli_runs import cli
from stripe_bridge_testing.waiting import wait_until_async

from .eras import era_event
from .sequences import CONFIG, T0
from .test_projector import publish_deliveries

DEAD = "stripe_bridge_consumer_dead_letters_total"


class AmountRemainingRequired(LifecycleProjector):
    """The projector before the fix: every invoice had to carry ``amount_remaining``."""

    def item_for(self, event: StripeEvent) -> tuple[str, Fact] | None:
        if event.type.startswith("invoice."):
            event.data.object["amount_remaining"]  # the bug: a KeyError
        return super().item_for(event)


async def stream_messages(url: str, stream: str, subject: str | None = None) -> list[Any]:
    """Every message stored in ``stream`` (on ``subject``), in order; [] before it exists."""
    from nats.js.errors import NotFoundError

    import nats

    nc = await nats.connect(url)
    try:
        return [msg async for msg in iter_stream(nc.jetstream(), stream, subject=subject)]
    except NotFoundError:  # the consumer creates STRIPE_DLQ when it starts
        return []
    finally:
        await nc.close()


async def run_until(projector: Any, done: Any, what: str) -> None:
    """Run ``projector`` until ``done()`` holds, then stop it."""
    stop = asyncio.Event()
    task = asyncio.create_task(projector.run(stop, fetch_wait=0.2))
    try:
        await wait_until_async(done, 30, what)
    finally:
        stop.set()
        await task


async def lifecycle_types(url: str) -> list[str]:
    """The lifecycle event types in USAGE, in order."""
    return [
        json.loads(m.data)["type"]
        for m in await stream_messages(url, USAGE_STREAM, "usage.lifecycle.>")
    ]


async def test_unusable_event_is_dead_lettered_counted_and_redriven_after_the_fix(
    stream: NatsServer,
) -> None:
    import nats

    old = [
        era_event("2017-08-15", "customer.subscription.created", "evt_dl_sub", T0, "sub_dl"),
        era_event("2017-08-15", "invoice.payment_failed", "evt_dl_inv", T0 + 1, "sub_dl", "in_dl"),
    ]
    await publish_deliveries(stream.url, old)
    nc = await nats.connect(stream.url)
    try:
        await provision_usage_streams(nc.jetstream())
        buggy = AmountRemainingRequired(nc)

        async def parked() -> bool:
            return bool(await stream_messages(stream.url, DEAD_LETTER_STREAM))

        await run_until(buggy, parked, "the invoice dead-lettered")
        (dead,) = await stream_messages(stream.url, DEAD_LETTER_STREAM)
        assert dead.subject == "stripe_dlq.dead.lifecycle.stripe.test.invoice.payment_failed"
        assert "evt_dl_inv not usable: KeyError: 'amount_remaining'" in dead.headers[REASON_HEADER]
        assert dead.headers[SOURCE_HEADER] == "STRIPE:2"
        assert json.loads(dead.data)["data"]["stripe"] == old[1]
        labels = {"consumer": "lifecycle", "event_type": "invoice.payment_failed"}
        assert buggy.metrics.registry.get_sample_value(DEAD, labels) == 1
        assert await lifecycle_types(stream.url) == ["subscription.started"]

        # What the runbook says to run: list the reasons, then (the fix deployed: the
        # real projector) hand back what the reason names.
        listed = await asyncio.to_thread(
            cli, "redrive", "--nats-url", stream.url, "--dry-run", "--json"
        )
        assert listed.returncode == 0, listed.stderr
        (entry,) = [json.loads(line) for line in listed.stdout.splitlines()]
        assert entry["outcome"] == "would_redrive" and "amount_remaining" in entry["reason"]
        moved = await asyncio.to_thread(
            cli, "redrive", "--nats-url", stream.url, "--reason", "amount_remaining", "--json"
        )
        assert moved.returncode == 0, moved.stderr
        assert json.loads(moved.stdout)["target"] == (
            "stripe_dlq.redrive.lifecycle.stripe.test.invoice.payment_failed"
        )
        fixed = LifecycleProjector(nc)

        async def failed_sent() -> bool:
            return "payment.failed" in await lifecycle_types(stream.url)

        await run_until(fixed, failed_sent, "the redriven invoice projected")
        assert await lifecycle_types(stream.url) == ["subscription.started", "payment.failed"]
        assert fixed.metrics.registry.get_sample_value(DEAD, labels) is None
        # Gone from the dead letters (the redriven copy was acked by the second durable).
        assert await stream_messages(stream.url, DEAD_LETTER_STREAM, "stripe_dlq.dead.>") == []
        info = await nc.jetstream().consumer_info(DEAD_LETTER_STREAM, "lifecycle-redrive")
        assert info.num_pending == 0 and info.num_ack_pending == 0
    finally:
        await nc.close()


async def test_unreadable_message_is_dead_lettered_not_dropped(stream: NatsServer) -> None:
    import nats

    nc = await nats.connect(stream.url)
    try:
        js = nc.jetstream()
        await js.publish("stripe.test.customer.subscription.updated", b"not json")
        projector = TierProjector(nc, CONFIG)

        async def parked() -> bool:
            return bool(await stream_messages(stream.url, DEAD_LETTER_STREAM))

        await run_until(projector, parked, "the unreadable message dead-lettered")
        (dead,) = await stream_messages(stream.url, DEAD_LETTER_STREAM)
        assert dead.subject == "stripe_dlq.dead.tiers.stripe.test.customer.subscription.updated"
        assert dead.headers[REASON_HEADER].startswith("unreadable: ")
        assert dead.data == b"not json"
        labels = {"consumer": "tiers", "event_type": "unknown"}
        assert projector.metrics.registry.get_sample_value(DEAD, labels) == 1
        # Terminated in STRIPE for this durable only: nothing left to deliver to it.
        info = await js.consumer_info("STRIPE", "tiers")
        assert info.num_pending == 0 and info.num_ack_pending == 0
    finally:
        await nc.close()


async def test_a_dead_letter_that_cannot_be_stored_leaves_the_message_in_place(
    stream: NatsServer,
) -> None:
    from nats.js.errors import NotFoundError
    from stripe_bridge.billing.deadletters import stripe_dead_letter

    import nats

    def nowhere(msg: Any, durable: str, reason: str) -> tuple[str, dict[str, str]]:
        # A subject no stream holds: the publish gets no PubAck, as when STRIPE_DLQ is down.
        subject, headers = stripe_dead_letter(msg, durable, reason)
        return "nowhere." + subject, headers

    nc = await nats.connect(stream.url)
    try:
        js = nc.jetstream()
        await js.publish("stripe.test.customer.subscription.updated", b"not json")
        projector = TierProjector(nc, CONFIG)
        projector.dead_letters.address = nowhere

        async def redelivered() -> bool:
            try:
                info = await js.consumer_info("STRIPE", "tiers")
            except NotFoundError:  # not bound yet
                return False
            return bool(info.num_redelivered)

        await run_until(projector, redelivered, "the message handed back, not terminated")
        assert await stream_messages(stream.url, DEAD_LETTER_STREAM) == []
        labels = {"consumer": "tiers", "event_type": "unknown"}
        assert projector.metrics.registry.get_sample_value(DEAD, labels) is None

        # STRIPE_DLQ reachable again: the next delivery is dead-lettered.
        projector.dead_letters.address = stripe_dead_letter

        async def parked() -> bool:
            return bool(await stream_messages(stream.url, DEAD_LETTER_STREAM))

        await run_until(projector, parked, "the message dead-lettered at last")
        assert projector.metrics.registry.get_sample_value(DEAD, labels) == 1
    finally:
        await nc.close()
