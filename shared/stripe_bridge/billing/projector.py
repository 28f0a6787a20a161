"""``project-tiers``: a durable JetStream consumer keeping customers' tiers in a KV bucket."""

from __future__ import annotations

import logging
from typing import Any, Unpack

from prometheus_client import CollectorRegistry, Counter
from stripe_bridge_entitlements import cas
from stripe_bridge_entitlements.reservations import publish_tier_file

from ..envelope import StripeEvent
from .stripe_consumer import ConsumerMetrics, ConsumerOptions, StripeConsumer, key_value
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


class ProjectorMetrics(ConsumerMetrics):
    """The projector's metrics, in their own registry."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        super().__init__(
            "tiers",
            "Stripe events seen by the tier projector, by type and outcome.",
            "Stripe events in the stream not yet delivered to the projector.",
            registry,
        )
        self.cas_conflicts = Counter(
            "stripe_bridge_tiers_cas_conflicts",
            "KV compare-and-set attempts that lost to another writer and were retried.",
            registry=self.registry,
        )


async def tiers_bucket(js: Any, replicas: int = 1) -> Any:
    """The KV bucket of customer states, created if missing (history 5 for forensics)."""
    return await key_value(js, TIERS_BUCKET, replicas, history=5)


async def read_state(kv: Any, customer_id: str) -> tuple[CustomerState | None, int | None]:
    """A customer's stored state and its KV revision (None, None if never seen)."""
    entry = await cas.read(kv, customer_id)
    if entry.value is None:
        return None, None
    return CustomerState.model_validate_json(entry.value), entry.revision


async def project(
    kv: Any, update: Update, config: TierConfig, metrics: ProjectorMetrics | None = None
) -> bool:
    """Apply ``update`` with compare-and-set; True if the stored state changed.

    Raises ``cas.Contention`` when other writers keep changing the customer's entry."""

    async def step(entry: cas.Entry, _: object) -> tuple[bytes | None, bool]:
        current = None if entry.value is None else CustomerState.model_validate_json(entry.value)
        new = apply(current, update, config)
        if new == current:
            return None, False
        return new.model_dump_json().encode(), True

    conflict = None if metrics is None else metrics.cas_conflicts.inc
    return await cas.update(kv, update.customer_id, step, on_conflict=conflict)


class TierProjector(StripeConsumer[Update, ProjectorMetrics]):
    """Reads Stripe events from the STRIPE stream and projects them into the tiers bucket.

    Order within a customer is not needed for correctness (the reducer is
    order-independent); one writer per customer only avoids compare-and-set retries.
    """

    DURABLE = "tiers"

    def __init__(
        self,
        nc: Any,
        config: TierConfig,
        metrics: ProjectorMetrics | None = None,
        **options: Unpack[ConsumerOptions],
    ) -> None:
        super().__init__(nc, metrics or ProjectorMetrics(), **options)
        self.config = config

    async def open(self) -> None:
        """Open (or create) the tiers bucket and publish the tier file to ``BILLING_LIMITS``.

        project-tiers never scales to zero, so in-process entitlements clients find the
        limits from the start, not only after the entitlements function's first request.
        """
        self.kv = await tiers_bucket(self.js, self.bucket_replicas)
        await publish_tier_file(
            self.js, self.config.model_dump_json().encode(), self.bucket_replicas
        )

    def item_for(self, event: StripeEvent) -> tuple[str, Update] | None:
        """The update of a projected event; events saying nothing are counted as ignored."""
        if event.type not in PROJECTED_EVENTS:
            return None
        update = update_from_event(event, self.config)
        if update is None:
            self.metrics.events.labels(event.type, "ignored").inc()
            return None
        return update.customer_id, update

    async def commit(self, msg: Any, event_type: str, item: Update) -> None:
        """Write ``item`` with compare-and-set, then ack (nak when contention persists)."""
        try:
            changed = await project(self.kv, item, self.config, self.metrics)
        except cas.Contention:
            log.warning("kv contention on %s; retried later", item.customer_id)
            self.metrics.events.labels(event_type, "conflict").inc()
            await msg.nak(delay=1)
            return
        self.metrics.events.labels(event_type, "updated" if changed else "unchanged").inc()
        await msg.ack()
