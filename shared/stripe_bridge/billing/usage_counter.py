"""``count-usage``: usage per customer, meter and window, from the USAGE stream into NATS KV.

One KV bucket per window (``BILLING_USAGE_MINUTE|DAY|MONTH|TOTAL``, each kept a little
longer than its window); key ``<customer>.<meter>.<window start>``. Each entry holds the
count, the stream sequence of the last record applied (``last_seq``) and the reservations
``/v1/check`` made on it, and changes only by compare-and-set.

Exactly once: the counter reads the stream strictly in sequence order (an ordered consumer
from its checkpoint, never a redelivery out of order), applying a record only if its
sequence is above the entry's ``last_seq``. A restart re-reads from the checkpoint and
skips what was applied; a second counter reading the same stream skips what the first
applied. A record id is counted once over the dedup horizon (``--dedup-horizon-days``,
default 32, OpenMeter's own example expiration), not only over USAGE's 2-hour duplicate
window: the first stream sequence seen for a (source, id) is remembered in
``BILLING_USAGE_SEEN`` (an entry per record, expiring after the horizon), and a later copy
of the same record, a producer's late retry stored again, is ``already_counted``.

A record the counter cannot read is dead-lettered to USAGE_DLQ with the reason (as the
forwarder does, ``deadletters.usage_dead_letter``) before the checkpoint passes it; if
that fails, the counter restarts from its checkpoint rather than skip it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import math
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any, NamedTuple

from prometheus_client import CollectorRegistry, Counter, Gauge
from pydantic import BaseModel, ConfigDict, Field

# Where counts live: one definition, shared with the in-process entitlements client.
from stripe_bridge_entitlements import cas
from stripe_bridge_entitlements.keys import count_key as count_key
from stripe_bridge_entitlements.keys import customer_token as customer_token
from stripe_bridge_entitlements.keys import usage_bucket as usage_bucket
from stripe_bridge_entitlements.reservations import Reservations, reservations_bucket

from ..streams import USAGE_STREAM, USAGE_SUBJECT_PREFIX
from .deadletters import (
    DeadLetterFailed,
    DeadLetters,
    dead_letter_counter,
    reason_of,
    redriven_for,
    usage_dead_letter,
)
from .limits import Window
from .stripe_consumer import key_value
from .tiers import TierConfig

log = logging.getLogger(__name__)

#: How long each window's entries outlive their last write (late records, reading usage).
WINDOW_TTL: dict[Window, float] = {
    Window.MINUTE: 15 * 60,
    Window.DAY: 3 * 86400,
    Window.MONTH: 40 * 86400,
    Window.TOTAL: 0,
}
#: The bucket remembering, per record, the stream sequence of the copy that counts.
SEEN_BUCKET = "BILLING_USAGE_SEEN"
#: How long a record id stays counted once (OpenMeter's example dedupe expiration, 768h).
DEFAULT_DEDUP_HORIZON_DAYS = 32.0


class Reservation(BaseModel):
    """A reservation of the format before the ledger (``BILLING_RESERVATIONS``), kept in
    the count until the record with its id arrives or it expires (``CountView``'s legacy)."""

    model_config = ConfigDict(frozen=True)

    quantity: float
    expires: float


class MeterCount(BaseModel):
    """One KV entry: a customer's usage of one meter in one window."""

    model_config = ConfigDict(frozen=True)

    used: float = 0
    last_seq: int = 0
    reservations: dict[str, Reservation] = Field(default_factory=dict)

    def pruned(self, now: float) -> dict[str, Reservation]:
        """The reservations that have not expired."""
        return {k: r for k, r in self.reservations.items() if r.expires > now}


async def usage_buckets(js: Any, replicas: int = 1) -> dict[Window, Any]:
    """Every window's bucket, created if missing."""
    return {
        window: await key_value(js, usage_bucket(window), replicas, history=1, ttl=ttl or None)
        for window, ttl in WINDOW_TTL.items()
    }


def record_key(source: str, record_id: str) -> str:
    """The ``BILLING_USAGE_SEEN`` key of a record: OpenMeter's identity, (source, id), hashed
    (ids may hold any character; a key may not)."""
    return hashlib.sha256(f"{source}\0{record_id}".encode()).hexdigest()


async def first_sighting(kv: Any, key: str, seq: int) -> bool:
    """Whether the copy at stream sequence ``seq`` is the one of its record that counts.

    The first copy seen claims the record's key with its sequence. Remembering it before
    the count is safe: a crash in between re-reads the same ``seq`` (still the claimant,
    so it is counted then), while any other copy, a late retry stored again or a record
    redriven twice, finds another sequence there.
    """
    if await cas.write(kv, key, str(seq).encode(), None):
        return True
    # Not cas.read: a claim that expired in between raises (the counter restarts from its
    # checkpoint) rather than reading as absent and dropping the record as a repeat.
    entry = await kv.get(key)
    return int(entry.value) == seq


def _count(entry: cas.Entry) -> MeterCount:
    return MeterCount() if entry.value is None else MeterCount.model_validate_json(entry.value)


async def read_count(kv: Any, key: str) -> tuple[MeterCount, int | None]:
    """The entry at ``key`` and its revision (an empty count and None if absent)."""
    entry = await cas.read(kv, key)
    return _count(entry), entry.revision


async def apply_record(kv: Any, key: str, seq: int, value: float, record_id: str) -> bool:
    """Add one record (stream sequence ``seq``) unless applied; True if it was added now.

    A reservation under the record's id becomes usage (the check's caller recorded what it
    reserved), so the quantity is not counted twice. Raises ``cas.Contention`` when other
    writers keep changing the entry (the counter re-reads from its checkpoint).
    """

    async def step(entry: cas.Entry, _: object) -> tuple[bytes | None, bool]:
        count = _count(entry)
        if count.last_seq >= seq:
            return None, False
        reservations = count.pruned(time.time())
        reservations.pop(record_id, None)
        new = MeterCount(used=count.used + value, last_seq=seq, reservations=reservations)
        return new.model_dump_json().encode(), True

    return await cas.update(kv, key, step)


class CounterMetrics:
    """The usage counter's metrics, in their own registry."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.records = Counter(
            "stripe_bridge_usage_counted_records",
            "Usage records read by the counter, by meter and outcome (counted, "
            "already_counted, unmetered, invalid: dead-lettered).",
            ["meter", "outcome"],
            registry=r,
        )
        self.quantity = Counter(
            "stripe_bridge_usage_counted_quantity",
            "Usage quantity added to the customers' counts, by meter.",
            ["meter"],
            registry=r,
        )
        self.lag = Gauge(
            "stripe_bridge_usage_counter_lag",
            "Usage records in the stream after the counter's checkpoint.",
            registry=r,
        )
        self.dead_letters = dead_letter_counter(r)


class Record(NamedTuple):
    """What the counter reads of a usage CloudEvent."""

    meter: str
    customer: str
    value: float
    time: datetime
    id: str
    source: str


def _record(data: bytes) -> Record:
    """The counted fields of a usage CloudEvent."""
    event = json.loads(data)
    when = datetime.fromisoformat(str(event["time"]).replace("Z", "+00:00"))
    value = float(event["data"]["value"])
    if not math.isfinite(value):
        raise ValueError(f"value {value} is not a finite number")
    return Record(
        str(event["type"]), str(event["subject"]), value, when, str(event["id"]),
        str(event["source"]),
    )  # fmt: skip


class UsageCounter:
    """Reads ``usage.*`` in order from its checkpoint and keeps the counts in KV."""

    def __init__(
        self,
        nc: Any,
        config: TierConfig,
        name: str = "counter",
        batch_size: int = 256,
        metrics: CounterMetrics | None = None,
        bucket_replicas: int = 1,
        dedup_horizon_days: float = DEFAULT_DEDUP_HORIZON_DAYS,
    ) -> None:
        self.js = nc.jetstream()
        self.config = config
        self.name = name
        self.batch_size = batch_size
        self.metrics = metrics or CounterMetrics()
        self.bucket_replicas = bucket_replicas
        self.buckets: dict[Window, Any] = {}
        self.dedup_horizon = dedup_horizon_days * 86400
        self.seen: Any = None
        self.reservations: Reservations | None = None
        self.dead_letters = DeadLetters(self.js, name, self.metrics.dead_letters, usage_dead_letter)

    @property
    def checkpoint_key(self) -> str:
        """Where the counter keeps the last stream sequence it has fully applied."""
        return f"_position.{self.name}"

    async def checkpoint(self) -> int:
        """The last sequence applied (0 before the first run)."""
        count, _ = await read_count(self.buckets[Window.TOTAL], self.checkpoint_key)
        return count.last_seq

    async def save_checkpoint(self, seq: int) -> None:
        """Move the checkpoint forward to ``seq`` (never back, whoever else writes it)."""

        async def step(entry: cas.Entry, _: object) -> tuple[bytes | None, None]:
            if _count(entry).last_seq >= seq:
                return None, None
            return MeterCount(last_seq=seq).model_dump_json().encode(), None

        # Losing every attempt means other counters of the same name keep moving it
        # forward: the next batch saves it again, and a restart re-reads from the older
        # position, skipping what was applied (each entry's last_seq).
        with contextlib.suppress(cas.Contention):
            await cas.update(self.buckets[Window.TOTAL], self.checkpoint_key, step)

    def read(self, data: bytes) -> Record:
        """The counted fields of a usage record; ValueError/KeyError/TypeError if it cannot
        be counted."""
        return _record(data)

    async def apply(self, msg: Any) -> None:
        """Count one message (already counted or unmetered ones change nothing); one that
        cannot be read is dead-lettered (DeadLetterFailed if that failed)."""
        seq = msg.metadata.sequence.stream
        redriven = redriven_for(msg.headers, self.name)
        if redriven is False:
            # Another consumer's dead letter, handed back to it: counted here the first time.
            self.metrics.records.labels(msg.subject.split(".")[-1], "already_counted").inc()
            return
        try:
            meter, customer, value, when, record_id, source = self.read(msg.data)
        except (ValueError, KeyError, TypeError) as exc:
            subject_meter = msg.subject.split(".")[-1]
            self.metrics.records.labels(subject_meter, "invalid").inc()
            reason = f"unreadable usage record: {reason_of(exc)}"
            if not await self.dead_letters.park(msg, subject_meter, reason):
                raise DeadLetterFailed(f"{USAGE_STREAM}:{seq}") from exc
            return
        window = self.config.meters.get(meter)
        if window is None:
            self.metrics.records.labels(meter, "unmetered").inc()
            return
        # One copy of a record counts: a late retry stored again after USAGE's duplicate
        # window, or a record redriven more than once (a forwarder that refuses a redriven
        # record again copies the counter's mark into its own dead letter), is a repeat.
        if not await first_sighting(self.seen, record_key(source, record_id), seq):
            self.metrics.records.labels(meter, "already_counted").inc()
            return
        key = count_key(customer, meter, window, when)
        if self.reservations is not None:
            # A reservation under the record's id (a check that reserved, then recorded its
            # usage through billing_usage) becomes this usage rather than holding the same
            # units until it expires (the in-process client hands it over itself; then
            # this finds nothing). Its ledger keeps it until ``seq`` is counted.
            await self.reservations.consume(self.buckets[window], key, record_id, seq)
        added = await apply_record(self.buckets[window], key, seq, value, record_id)
        self.metrics.records.labels(meter, "counted" if added else "already_counted").inc()
        if added:
            self.metrics.quantity.labels(meter).inc(value)

    async def _consumer(self, start: int) -> Any:
        from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

        config = ConsumerConfig(
            ack_policy=AckPolicy.NONE,
            deliver_policy=DeliverPolicy.BY_START_SEQUENCE,
            opt_start_seq=start,
            filter_subject=f"{USAGE_SUBJECT_PREFIX}.*",
            inactive_threshold=60.0,
            mem_storage=True,
        )
        name = (await self.js.add_consumer(USAGE_STREAM, config)).name
        return await self.js.pull_subscribe_bind(consumer=name, stream=USAGE_STREAM)

    async def run(
        self,
        stop: asyncio.Event,
        fetch_wait: float = 1.0,
        on_bound: Callable[[], object] | None = None,
    ) -> None:
        """Count until ``stop``; any gap or error restarts reading from the checkpoint."""
        from nats import errors as nats_errors

        self.buckets = await usage_buckets(self.js, self.bucket_replicas)
        self.seen = await key_value(
            self.js, SEEN_BUCKET, self.bucket_replicas, history=1, ttl=self.dedup_horizon
        )
        # consume() never reserves: the hold's own slot says when it expires, not this ttl.
        ledger = await reservations_bucket(self.js, self.bucket_replicas)
        self.reservations = Reservations(ledger, ttl=1)
        bound = False
        while not stop.is_set():
            try:
                await self._read(stop, fetch_wait, None if bound else on_bound)
            except (nats_errors.Error, cas.Contention, DeadLetterFailed, TimeoutError) as exc:
                log.warning("usage counter restarts from its checkpoint: %s", type(exc).__name__)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 1.0)
            bound = True

    async def _read(
        self, stop: asyncio.Event, fetch_wait: float, on_bound: Callable[[], object] | None
    ) -> None:
        from nats import errors as nats_errors

        position = await self.checkpoint()
        sub = await self._consumer(position + 1)
        if on_bound is not None:
            on_bound()
        expected = 1  # consumer sequence: a jump means a lost delivery
        try:
            while not stop.is_set():
                try:
                    msgs = await sub.fetch(self.batch_size, timeout=fetch_wait)
                except (TimeoutError, nats_errors.TimeoutError):
                    msgs = []
                for msg in msgs:
                    if msg.metadata.sequence.consumer != expected:
                        raise nats_errors.Error("ordered read skipped a message")
                    expected += 1
                    await self.apply(msg)
                    position = msg.metadata.sequence.stream
                if msgs:
                    await self.save_checkpoint(position)
                self.metrics.lag.set((await sub.consumer_info()).num_pending)
        finally:
            await sub.unsubscribe()
