"""``project-tiers``: a durable JetStream consumer keeping customers' tiers in a KV bucket."""

from __future__ import annotations

import logging
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge
from stripe_bridge_entitlements import cas

from ..envelope import StripeEvent
from .deadletters import dead_letter_counter
from .stripe_consumer import StripeConsumer, key_value
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
        self.dead_letters = dead_letter_counter(r)


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


class TierProjector(StripeConsumer[Update]):
    """Reads Stripe events from the STRIPE stream and projects them into the tiers bucket.

    Order within a customer is not needed for correctness (the reducer is
    order-independent); one writer per customer only avoids compare-and-set retries.
    """

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
        self.metrics = metrics or ProjectorMetrics()
        super().__init__(
            nc,
            self.metrics.events,
            self.metrics.lag,
            self.metrics.dead_letters,
            stream,
            subject_prefix,
            durable,
            batch_size,
            bucket_replicas,
        )
        self.config = config
        self.kv: Any = None
        self.bucket_replicas = bucket_replicas

    async def open(self) -> None:
        """Open (or create) the tiers bucket."""
        self.kv = await tiers_bucket(self.js, self.bucket_replicas)

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
