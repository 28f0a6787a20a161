"""``project-lifecycle``: billing events from STRIPE become OpenMeter lifecycle events.

For each of the seven billing events the gate of its subscription or invoice (KV bucket
``BILLING_LIFECYCLE``, compare-and-set) decides what to send (``lifecycle.decide``); the
lifecycle CloudEvents are published into the USAGE stream on ``usage.lifecycle.<type>``
with their id as ``Nats-Msg-Id``, and ``forward-openmeter`` delivers them with the usage
records: the same durable consumer, batching, 429/Retry-After, breaker and dead letters,
and OpenMeter's dedup on id + source. Order per message: gate write, publish (PubAck),
ack. A crash in between redelivers the event, whose decision the gate remembers, so the
same ids are published again and deduplicated.
"""

from __future__ import annotations

import logging
from typing import Any, Unpack

from cloudevents.conversion import to_structured
from cloudevents.http import CloudEvent
from prometheus_client import CollectorRegistry, Counter
from stripe_bridge_entitlements import cas

from ..envelope import StripeEvent
from ..message import CONTENT_TYPE, MSG_ID_HEADER
from ..streams import USAGE_SUBJECT_PREFIX
from .lifecycle import Fact, Gate, LifecycleEvent, decide, fact_from_event
from .stripe_consumer import ConsumerMetrics, ConsumerOptions, StripeConsumer, key_value

log = logging.getLogger(__name__)

LIFECYCLE_BUCKET = "BILLING_LIFECYCLE"
#: Lifecycle events in USAGE: ``usage.lifecycle.subscription.started`` etc. Meter names
#: have no dots, so usage counters reading ``usage.*`` never see these.
LIFECYCLE_SUBJECT_PREFIX = f"{USAGE_SUBJECT_PREFIX}.lifecycle"


class LifecycleMetrics(ConsumerMetrics):
    """The lifecycle projector's metrics, in their own registry."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        super().__init__(
            "lifecycle",
            "Stripe events seen by the lifecycle projector, by type and outcome "
            "(sent, dropped: stale/duplicate/after the end, ignored, invalid, conflict, failed).",
            "Stripe events in the stream not yet delivered to the lifecycle projector.",
            registry,
        )
        self.published = Counter(
            "stripe_bridge_lifecycle_published",
            "Lifecycle events published into USAGE for OpenMeter, by lifecycle type.",
            ["type"],
            registry=self.registry,
        )


def encode_lifecycle(event: LifecycleEvent) -> tuple[str, bytes, dict[str, str]]:
    """Subject, structured CloudEvent body and headers of a lifecycle event."""
    attributes = event.cloudevent()
    data = attributes.pop("data")
    _, body = to_structured(CloudEvent(attributes, data))
    headers = {"Content-Type": CONTENT_TYPE, MSG_ID_HEADER: event.id}
    return f"{LIFECYCLE_SUBJECT_PREFIX}.{event.type.value}", body, headers


async def pass_gate(kv: Any, fact: Fact) -> list[LifecycleEvent]:
    """Decide ``fact`` against its gate with compare-and-set; the events to publish.

    Raises ``cas.Contention`` when other writers keep changing the gate."""

    async def step(entry: cas.Entry, _: object) -> tuple[bytes | None, list[LifecycleEvent]]:
        gate = None if entry.value is None else Gate.model_validate_json(entry.value)
        new, events = decide(gate, fact)
        return (None if new == gate else new.model_dump_json().encode()), events

    return await cas.update(kv, fact.gate, step)


class LifecycleProjector(StripeConsumer[Fact, LifecycleMetrics]):
    """Turns the seven billing events into lifecycle events in USAGE, in gate order."""

    DURABLE = "lifecycle"

    def __init__(
        self, nc: Any, metrics: LifecycleMetrics | None = None, **options: Unpack[ConsumerOptions]
    ) -> None:
        super().__init__(nc, metrics or LifecycleMetrics(), **options)

    async def open(self) -> None:
        """Open (or create) the gates' bucket."""
        self.kv = await key_value(self.js, LIFECYCLE_BUCKET, self.bucket_replicas, history=1)

    def item_for(self, event: StripeEvent) -> tuple[str, Fact] | None:
        """The lifecycle fact of one of the seven events; others are acked untouched."""
        fact = fact_from_event(event)
        if fact is None:
            return None
        # Per gate, not per customer: a subscription's events stay in order in a batch.
        return fact.gate, fact

    async def commit(self, msg: Any, event_type: str, item: Fact) -> None:
        """Gate, publish what passed (awaiting each PubAck), then ack."""
        from nats import errors as nats_errors

        try:
            events = await pass_gate(self.kv, item)
            for event in events:
                subject, body, headers = encode_lifecycle(event)
                await self.js.publish(subject, body, headers=headers)
                self.metrics.published.labels(event.type.value).inc()
        except cas.Contention:
            self.metrics.events.labels(event_type, "conflict").inc()
            await msg.nak(delay=1)
            return
        except (nats_errors.Error, TimeoutError) as exc:
            # The gate remembers what it let through: the redelivery publishes the same ids.
            log.warning("lifecycle publish failed for %s: %s", item.event_id, type(exc).__name__)
            self.metrics.events.labels(event_type, "failed").inc()
            await msg.nak(delay=1)
            return
        self.metrics.events.labels(event_type, "sent" if events else "dropped").inc()
        await msg.ack()
