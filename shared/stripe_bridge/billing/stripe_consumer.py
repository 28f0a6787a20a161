"""The loop every consumer of the STRIPE stream shares (tier projector, lifecycle events).

A durable pull consumer on ``<prefix>.>``: fetch a batch, read each message once (one the
consumer cannot read or use is dead-lettered to ``STRIPE_DLQ`` with the reason, counted,
then terminated; one it has nothing to do with is acked), then commit each customer's
items in order while customers run in parallel; unacked messages come back after
``ack_wait``, so every ``commit`` must be idempotent. A second durable reads what
``stripe-bridge redrive`` hands back from the dead letters (``deadletters``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any, ClassVar, Generic, TypedDict, TypeVar

from prometheus_client import CollectorRegistry, Counter, Gauge
from pydantic import ValidationError

from ..envelope import StripeEvent
from ..message import parse_message
from .deadletters import DeadLetters, dead_letter_counter, open_dead_letters, reason_of, redriven

log = logging.getLogger(__name__)

ItemT = TypeVar("ItemT")
#: How often an idle consumer looks for messages ``redrive`` handed back.
REDRIVE_POLL_SECONDS = 5.0


class ConsumerMetrics:
    """What every STRIPE consumer counts, in its own registry: ``stripe_bridge_<name>_events``
    by type and outcome, ``stripe_bridge_<name>_consumer_lag`` and its dead letters."""

    def __init__(
        self, name: str, events_help: str, lag_help: str, registry: CollectorRegistry | None
    ) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.events = Counter(
            f"stripe_bridge_{name}_events", events_help, ["event_type", "outcome"], registry=r
        )
        self.lag = Gauge(f"stripe_bridge_{name}_consumer_lag", lag_help, registry=r)
        self.dead_letters = dead_letter_counter(r)


MetricsT = TypeVar("MetricsT", bound=ConsumerMetrics)


class ConsumerOptions(TypedDict, total=False):
    """Where a STRIPE consumer reads and how (``StripeConsumer``'s keyword arguments), so
    that subclasses pass them through without repeating them."""

    stream: str
    subject_prefix: str
    durable: str
    batch_size: int
    bucket_replicas: int


class StripeConsumer(ABC, Generic[ItemT, MetricsT]):
    """A durable consumer of Stripe events; subclasses say what an event means to them."""

    #: The durable consumer's name unless one is given.
    DURABLE: ClassVar[str]

    def __init__(
        self,
        nc: Any,
        metrics: MetricsT,
        stream: str = "STRIPE",
        subject_prefix: str = "stripe",
        durable: str | None = None,
        batch_size: int = 100,
        bucket_replicas: int = 1,
    ) -> None:
        self.nc = nc
        self.js = nc.jetstream()
        self.metrics = metrics
        self.durable = durable or self.DURABLE
        self.dead_letters = DeadLetters(self.js, self.durable, metrics.dead_letters)
        self.stream = stream
        self.subject = f"{subject_prefix}.>"
        self.batch_size = batch_size
        self.bucket_replicas = bucket_replicas
        #: The KV bucket ``commit`` writes to, once ``open`` has run.
        self.kv: Any = None

    @abstractmethod
    def item_for(self, event: StripeEvent) -> tuple[str, ItemT] | None:
        """(customer id, item) for ``event``, or None if it means nothing here.

        Raise KeyError/TypeError/ValueError for an event that cannot be used (dead-lettered).
        """

    @abstractmethod
    async def commit(self, msg: Any, event_type: str, item: ItemT) -> None:
        """Act on ``item`` idempotently, then ack (or nak) ``msg``."""

    @abstractmethod
    async def open(self) -> None:
        """Open what ``commit`` writes to (KV buckets, streams), before consuming."""

    async def prepare(self, msg: Any) -> tuple[str, str, ItemT] | None:
        """(event type, customer, item) of one message, or None once acked/dead-lettered."""
        try:
            cloudevent = parse_message(msg.data)
            event = StripeEvent.model_validate(cloudevent["data"]["stripe"])
        except (ValueError, KeyError, TypeError, ValidationError) as exc:
            await self.reject(msg, "unknown", f"unreadable: {reason_of(exc)}")
            return None
        try:
            found = self.item_for(event)
        except (KeyError, TypeError, ValueError) as exc:
            await self.reject(msg, event.type, f"{event.id} not usable: {reason_of(exc)}")
            return None
        if found is None:
            await msg.ack()
            return None
        customer, item = found
        return event.type, customer, item

    async def reject(self, msg: Any, event_type: str, reason: str) -> None:
        """Dead-letter ``msg`` and terminate it here; nak it if the dead letter failed."""
        self.metrics.events.labels(event_type, "invalid").inc()
        if await self.dead_letters.park(msg, event_type, reason):
            await msg.term()
        else:
            await msg.nak(delay=1)

    async def handle_batch(self, msgs: list[Any]) -> None:
        """Commit a fetched batch: customers in parallel, each customer's events in order."""
        by_customer: dict[str, list[tuple[Any, str, ItemT]]] = {}
        for msg in msgs:
            prepared = await self.prepare(msg)
            if prepared is not None:
                event_type, customer, item = prepared
                by_customer.setdefault(customer, []).append((msg, event_type, item))

        async def one_customer(items: list[tuple[Any, str, ItemT]]) -> None:
            for msg, event_type, item in items:
                await self.commit(msg, event_type, item)

        await asyncio.gather(*(one_customer(items) for items in by_customer.values()))

    async def subscribe(self) -> tuple[Any, Any]:
        """Open the targets and the dead letters; bind the durable and its redrive durable."""
        from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

        await self.open()
        await open_dead_letters(self.js, self.bucket_replicas)
        config = ConsumerConfig(
            durable_name=self.durable,
            ack_policy=AckPolicy.EXPLICIT,
            deliver_policy=DeliverPolicy.ALL,
            ack_wait=30,
            max_deliver=-1,
        )
        main = await self.js.pull_subscribe(
            self.subject, durable=self.durable, stream=self.stream, config=config
        )
        return main, await redriven(self.js, self.durable)

    async def run(
        self,
        stop: asyncio.Event,
        fetch_wait: float = 1.0,
        on_bound: Callable[[], object] | None = None,
    ) -> None:
        """Consume until ``stop`` is set; ``on_bound`` runs once the consumer is bound."""
        from nats import errors as nats_errors

        sub, again = await self.subscribe()
        if on_bound is not None:
            on_bound()
        checked = redrive_due = 0.0
        try:
            while not stop.is_set():
                try:
                    msgs = await _fetch(sub, self.batch_size, fetch_wait)
                    await self.handle_batch(msgs)
                    if time.monotonic() >= redrive_due:
                        # Redriven dead letters are rare: a short look every few seconds
                        # (at once again while they keep coming) keeps idle cost down.
                        back = await _fetch(again, self.batch_size, 0.05)
                        await self.handle_batch(back)
                        redrive_due = time.monotonic() + (0 if back else REDRIVE_POLL_SECONDS)
                    if not msgs or time.monotonic() - checked > 1.0:
                        checked = time.monotonic()
                        info = await sub.consumer_info()
                        self.metrics.lag.set(info.num_pending)
                except nats_errors.Error as exc:
                    # NATS restarting: unacked messages come back, commits absorb repeats.
                    log.warning("%s pull failed: %s", self.durable, type(exc).__name__)
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), 1.0)
        finally:
            # A bound pull subscription makes a later drain() wait its whole timeout.
            await sub.unsubscribe()
            await again.unsubscribe()


async def _fetch(sub: Any, batch: int, wait: float) -> list[Any]:
    """Up to ``batch`` messages, waiting at most ``wait`` seconds; [] when none came."""
    try:
        msgs: list[Any] = await sub.fetch(batch, timeout=wait)
    except TimeoutError:  # nats-py raises asyncio's or its own subclass
        return []
    return msgs


async def key_value(js: Any, bucket: str, replicas: int = 1, **config: Any) -> Any:
    """The KV bucket ``bucket``, created with ``config`` (history, ttl...) if missing."""
    from nats.js.api import KeyValueConfig
    from nats.js.errors import BucketNotFoundError

    try:
        return await js.key_value(bucket)
    except BucketNotFoundError:
        return await js.create_key_value(KeyValueConfig(bucket=bucket, replicas=replicas, **config))
