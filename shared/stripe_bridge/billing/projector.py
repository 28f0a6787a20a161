"""``project-tiers``: a durable JetStream consumer keeping customers' tiers in a KV bucket."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge
from pydantic import ValidationError

from ..envelope import StripeEvent
from ..message import parse_message
from .tiers import (
    PROJECTED_EVENTS,
    TIERS_BUCKET,
    CustomerState,
    TierConfig,
    Update,
    apply,
    update_from_event,
)

log = logging.getLogger(__name__)

#: Compare-and-set attempts per event before the message is handed back for later.
CAS_ATTEMPTS = 25


class ProjectionConflict(Exception):
    """Other writers kept changing the customer's entry; try the event again later."""


class ProjectorMetrics:
    """The projector's metrics, in their own registry."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.events = Counter(
            "stripe_bridge_tiers_events",
            "Stripe events seen by the tier projector, by type and outcome.",
            ["event_type", "outcome"],
            registry=r,
        )
        self.cas_conflicts = Counter(
            "stripe_bridge_tiers_cas_conflicts",
            "KV compare-and-set attempts that lost to another writer and were retried.",
            registry=r,
        )
        self.lag = Gauge(
            "stripe_bridge_tiers_consumer_lag",
            "Stripe events in the stream not yet delivered to the projector.",
            registry=r,
        )


async def tiers_bucket(js: Any, replicas: int = 1) -> Any:
    """The KV bucket of customer states, created if missing (history 5 for forensics)."""
    from nats.js.api import KeyValueConfig
    from nats.js.errors import BucketNotFoundError

    try:
        return await js.key_value(TIERS_BUCKET)
    except BucketNotFoundError:
        return await js.create_key_value(
            KeyValueConfig(bucket=TIERS_BUCKET, history=5, replicas=replicas)
        )


async def read_state(kv: Any, customer_id: str) -> tuple[CustomerState | None, int | None]:
    """A customer's stored state and its KV revision (None, None if never seen)."""
    from nats.js.errors import KeyDeletedError, KeyNotFoundError

    try:
        entry = await kv.get(customer_id)
    except (KeyNotFoundError, KeyDeletedError):
        return None, None
    return CustomerState.model_validate_json(entry.value), entry.revision


async def project(
    kv: Any, update: Update, config: TierConfig, metrics: ProjectorMetrics | None = None
) -> bool:
    """Apply ``update`` with compare-and-set; True if the stored state changed."""
    from nats.js.errors import KeyWrongLastSequenceError

    for _ in range(CAS_ATTEMPTS):
        current, revision = await read_state(kv, update.customer_id)
        new = apply(current, update, config)
        if new == current:
            return False
        value = new.model_dump_json().encode()
        try:
            if revision is None:
                await kv.create(update.customer_id, value)
            else:
                await kv.update(update.customer_id, value, last=revision)
            return True
        except KeyWrongLastSequenceError:
            if metrics is not None:
                metrics.cas_conflicts.inc()
    raise ProjectionConflict(update.customer_id)


class TierProjector:
    """Reads Stripe events from the STRIPE stream and projects them into the tiers bucket."""

    def __init__(
        self,
        nc: Any,
        config: TierConfig,
        stream: str = "STRIPE",
        subject_prefix: str = "stripe",
        durable: str = "tiers",
        batch_size: int = 100,
        metrics: ProjectorMetrics | None = None,
        bucket_replicas: int = 1,
    ) -> None:
        self.js = nc.jetstream()
        self.config = config
        self.stream = stream
        self.subject = f"{subject_prefix}.>"
        self.durable = durable
        self.batch_size = batch_size
        self.metrics = metrics or ProjectorMetrics()
        self.kv: Any = None
        self.bucket_replicas = bucket_replicas

    async def prepare(self, msg: Any) -> tuple[str, Update] | None:
        """Read one message: its event type and update, or None once acked/terminated."""
        try:
            cloudevent = parse_message(msg.data)
            event = StripeEvent.model_validate(cloudevent["data"]["stripe"])
        except (ValueError, KeyError, TypeError, ValidationError) as exc:
            log.warning("unreadable message seq=%s: %s", msg.metadata.sequence.stream, exc)
            self.metrics.events.labels("unknown", "invalid").inc()
            await msg.term()
            return None
        if event.type not in PROJECTED_EVENTS:
            await msg.ack()
            return None
        try:
            update = update_from_event(event, self.config)
        except (KeyError, TypeError, ValueError) as exc:
            log.warning("event %s (%s) not projectable: %s", event.id, event.type, exc)
            self.metrics.events.labels(event.type, "invalid").inc()
            await msg.term()
            return None
        if update is None:
            self.metrics.events.labels(event.type, "ignored").inc()
            await msg.ack()
            return None
        return event.type, update

    async def commit(self, msg: Any, event_type: str, update: Update) -> None:
        """Write ``update`` with compare-and-set, then ack (nak when contention persists)."""
        try:
            changed = await project(self.kv, update, self.config, self.metrics)
        except ProjectionConflict:
            log.warning("kv contention on %s; retried later", update.customer_id)
            self.metrics.events.labels(event_type, "conflict").inc()
            await msg.nak(delay=1)
            return
        self.metrics.events.labels(event_type, "updated" if changed else "unchanged").inc()
        await msg.ack()

    async def handle_batch(self, msgs: list[Any]) -> None:
        """Project a fetched batch: customers in parallel, each customer's events in order.

        Order is not needed for correctness (the reducer is order-independent); keeping one
        writer per customer only avoids compare-and-set retries within the batch.
        """
        by_customer: dict[str, list[tuple[Any, str, Update]]] = {}
        for msg in msgs:
            prepared = await self.prepare(msg)
            if prepared is not None:
                event_type, update = prepared
                by_customer.setdefault(update.customer_id, []).append((msg, event_type, update))

        async def one_customer(items: list[tuple[Any, str, Update]]) -> None:
            for msg, event_type, update in items:
                await self.commit(msg, event_type, update)

        await asyncio.gather(*(one_customer(items) for items in by_customer.values()))

    async def subscribe(self) -> Any:
        """Bind the durable pull consumer and open the bucket."""
        from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

        self.kv = await tiers_bucket(self.js, self.bucket_replicas)
        config = ConsumerConfig(
            durable_name=self.durable,
            ack_policy=AckPolicy.EXPLICIT,
            deliver_policy=DeliverPolicy.ALL,
            ack_wait=30,
            max_deliver=-1,
        )
        return await self.js.pull_subscribe(
            self.subject, durable=self.durable, stream=self.stream, config=config
        )

    async def run(
        self,
        stop: asyncio.Event,
        fetch_wait: float = 1.0,
        on_bound: Callable[[], object] | None = None,
    ) -> None:
        """Project until ``stop`` is set; ``on_bound`` runs once the consumer is bound."""
        from nats import errors as nats_errors

        sub = await self.subscribe()
        if on_bound is not None:
            on_bound()
        checked = 0.0
        try:
            while not stop.is_set():
                try:
                    try:
                        msgs = await sub.fetch(self.batch_size, timeout=fetch_wait)
                    except TimeoutError:  # nats-py raises asyncio's or its own subclass
                        msgs = []
                    await self.handle_batch(msgs)
                    if not msgs or time.monotonic() - checked > 1.0:
                        checked = time.monotonic()
                        info = await sub.consumer_info()
                        self.metrics.lag.set(info.num_pending)
                except nats_errors.Error as exc:
                    # NATS restarting: unacked messages come back, the reducer absorbs repeats.
                    log.warning("projector pull failed: %s", type(exc).__name__)
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), 1.0)
        finally:
            # A bound pull subscription makes a later drain() wait its whole timeout.
            await sub.unsubscribe()
