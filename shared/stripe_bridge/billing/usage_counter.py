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

It applies what one fetch returns as a batch, its round trips overlapped (``overlap``, at
most ``concurrency`` in flight): the seen-bucket claims of the batch's distinct records
together (copies within the batch settled in memory: the first in stream order claims),
then each claimant's reservation hand-over, then one compare-and-set per count key adding
all its records above ``last_seq`` in order (``apply_records``). A failure after some keys
were written restarts from the checkpoint like any other: those keys' ``last_seq`` skips
them, the others are counted then. It remembers the entries it wrote last and writes
a key again at that revision without reading it first (it is their only writer, but for
a second counter's overlap: a stale copy costs one lost write, then a read).

A record the counter cannot read is dead-lettered to USAGE_DLQ with the reason (as the
forwarder does, ``deadletters.usage_dead_letter``) before the checkpoint passes it; if
that fails, the counter restarts from its checkpoint rather than skip it.

Partitions (``usage_partitions``, ``--partitions N --partition I``) scale it out: each
reads all of USAGE from its own checkpoint and counts its customers' records only, the
others skipped without KV work; partition 0 alone parks unreadable records. A partition
whose own checkpoint is missing or behind the common one (``_position.<name>``, the
unpartitioned counter's) starts from the common one, which partition 0 moves to the
lowest checkpoint of its set: every customer is counted up to there, so a scale-out (or
a change of N) re-reads a little, skipped by ``last_seq``, and skips nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NamedTuple

from cachetools import LRUCache
from prometheus_client import CollectorRegistry, Counter, Gauge
from pydantic import BaseModel, ConfigDict, Field

# Where counts live: one definition, shared with the in-process entitlements client.
from stripe_bridge_entitlements import cas
from stripe_bridge_entitlements.keys import count_key as count_key
from stripe_bridge_entitlements.keys import customer_token as customer_token
from stripe_bridge_entitlements.keys import usage_bucket as usage_bucket
from stripe_bridge_entitlements.reservations import Reservations, reservations_bucket

from ..streams import USAGE_STREAM, USAGE_SUBJECT_PREFIX
from . import overlap
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
from .usage_partitions import WHOLE, Partition, common_checkpoint_key

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
#: KV round trips of one batch in flight at once (claims, then count writes).
DEFAULT_CONCURRENCY = 64
#: Count entries remembered as written (~200 bytes each): a customer's next records are
#: written without reading the entry first.
WRITTEN_ENTRIES = 20_000


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


async def claimant(kv: Any, key: str, seq: int) -> int:
    """The stream sequence of the copy of a record that counts: ``seq`` if it is the first
    copy seen, else the one that claimed the record's key before it.

    Claiming before the count is safe: a crash in between re-reads the same ``seq`` (still
    the claimant, so it is counted then), while any other copy, a late retry stored again
    or a record redriven twice, finds another sequence there.
    """
    if await cas.write(kv, key, str(seq).encode(), None):
        return seq
    # Not cas.read: a claim that expired in between raises (the counter restarts from its
    # checkpoint) rather than reading as absent and dropping the record as a repeat.
    entry = await kv.get(key)
    return int(entry.value)


def _count(entry: cas.Entry) -> MeterCount:
    return MeterCount() if entry.value is None else MeterCount.model_validate_json(entry.value)


async def read_count(kv: Any, key: str) -> tuple[MeterCount, int | None]:
    """The entry at ``key`` and its revision (an empty count and None if absent)."""
    entry = await cas.read(kv, key)
    return _count(entry), entry.revision


class Pending(NamedTuple):
    """A record that counts unless it was applied already: stream sequence, value, id."""

    seq: int
    value: float
    id: str


async def apply_records(
    kv: Any,
    key: str,
    records: Sequence[Pending],
    known: cas.Entry | None = None,
    stored: Callable[[cas.Entry], None] | None = None,
) -> list[Pending]:
    """Add ``records`` (in stream order) to the count at ``key`` in one compare-and-set,
    each unless applied already (its sequence not above the entry's ``last_seq``); the
    records added now. ``known``: the entry as the caller last wrote it, to write at its
    revision without reading first (stale: one lost write, then a read); ``stored`` is
    told the entry written.

    ``last_seq`` becomes the highest sequence added: a counter re-reading them (a restart,
    a second counter) skips them all, and records of the key read later are all above it.
    A reservation under a record's id (the legacy format) becomes usage (the check's
    caller recorded what it reserved), so the quantity is not counted twice. Raises
    ``cas.Contention`` when other writers keep changing the entry (the counter re-reads
    from its checkpoint).
    """

    async def step(entry: cas.Entry, _: object) -> tuple[bytes | None, list[Pending]]:
        count = _count(entry)
        added = [r for r in records if r.seq > count.last_seq]
        if not added:
            return None, added
        reservations = count.pruned(time.time())
        used = count.used
        for record in added:  # one at a time: the sum a record at a time would make
            used += record.value
            reservations.pop(record.id, None)
        new = MeterCount(used=used, last_seq=added[-1].seq, reservations=reservations)
        return new.model_dump_json().encode(), added

    guess = None if known is None else (known, None)
    return await cas.update(kv, key, step, known=guess, stored=stored)


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
            "Usage records in the stream after the counter's checkpoint, by partition.",
            ["partition"],
            registry=r,
        )
        self.partitions = Gauge(
            "stripe_bridge_usage_counter_partitions",
            "How many partitions the usage counters split the customers into (--partitions): "
            "as many lag series should exist.",
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


class _Copy(NamedTuple):
    """One stored copy of a countable record, as a batch files it."""

    meter: str
    window: Window
    #: The count key it adds to, and its record's key in the seen bucket.
    key: str
    seen_key: str
    pending: Pending


@dataclass
class _Batch:
    """A fetched batch, filed: the copies of each record (by seen key, in stream order)
    and the messages to dead-letter."""

    copies: dict[str, list[_Copy]] = field(default_factory=dict)
    unreadable: list[tuple[Any, str, Exception]] = field(default_factory=list)


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
        concurrency: int = DEFAULT_CONCURRENCY,
        partition: Partition = WHOLE,
    ) -> None:
        self.js = nc.jetstream()
        self.partition = partition.check()
        self.concurrency = concurrency
        #: The count entries this counter wrote last (it is their only writer but for a
        #: second counter's overlap), least recently used out: the next write to one needs
        #: no read.
        self.written: LRUCache[tuple[Window, str], cas.Entry] = LRUCache(WRITTEN_ENTRIES)
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
        self.metrics.partitions.set(partition.count)
        self.lag = self.metrics.lag.labels(str(partition.index))

    @property
    def checkpoint_key(self) -> str:
        """Where the counter keeps the last stream sequence it has fully applied."""
        return self.partition.checkpoint_key(self.name)

    async def checkpoint(self) -> int:
        """The last sequence applied (0 before the first run). A partition starts from the
        common checkpoint when its own is missing or behind it (left by an earlier set of
        the same size): every customer is counted up to there."""
        total = self.buckets[Window.TOTAL]
        count, _ = await read_count(total, self.checkpoint_key)
        if self.partition.count == 1:
            return count.last_seq
        common, _ = await read_count(total, common_checkpoint_key(self.name))
        return max(count.last_seq, common.last_seq)

    async def save_common_checkpoint(self) -> None:
        """Partition 0 of several: move the common checkpoint to the lowest of the set's
        (not before each has one: a partition without one starts from the common one)."""
        if not self.partition.owner or self.partition.count == 1:
            return
        total = self.buckets[Window.TOTAL]
        lowest = None
        for sibling in self.partition.siblings():
            count, revision = await read_count(total, sibling.checkpoint_key(self.name))
            if revision is None:
                return
            lowest = count.last_seq if lowest is None else min(lowest, count.last_seq)
        if lowest is not None:
            await self.save_checkpoint(lowest, common_checkpoint_key(self.name))

    async def save_checkpoint(self, seq: int, key: str | None = None) -> None:
        """Move the checkpoint (``key``: another) forward to ``seq`` (never back, whoever
        else writes it)."""

        async def step(entry: cas.Entry, _: object) -> tuple[bytes | None, None]:
            if _count(entry).last_seq >= seq:
                return None, None
            return MeterCount(last_seq=seq).model_dump_json().encode(), None

        # Losing every attempt means other counters of the same name keep moving it
        # forward: the next batch saves it again, and a restart re-reads from the older
        # position, skipping what was applied (each entry's last_seq).
        with contextlib.suppress(cas.Contention):
            await cas.update(self.buckets[Window.TOTAL], key or self.checkpoint_key, step)

    def read(self, data: bytes) -> Record:
        """The counted fields of a usage record; ValueError/KeyError/TypeError if it cannot
        be counted."""
        return _record(data)

    def _sort(self, msg: Any, batch: _Batch) -> None:
        """File one message of a batch: settled now (already counted, unmetered, another
        partition's), to park (unreadable), or a copy of a record to count. What belongs to
        no customer is the owner partition's alone."""
        seq = msg.metadata.sequence.stream
        subject_meter = msg.subject.split(".")[-1]
        owner = self.partition.owner
        redriven = redriven_for(msg.headers, self.name)
        if redriven is False:
            # Another consumer's dead letter, handed back to it: counted here the first time.
            if owner:
                self.metrics.records.labels(subject_meter, "already_counted").inc()
            return
        try:
            meter, customer, value, when, record_id, source = self.read(msg.data)
        except (ValueError, KeyError, TypeError) as exc:
            if owner:
                batch.unreadable.append((msg, subject_meter, exc))
            return
        window = self.config.meters.get(meter)
        if window is None:
            if owner:
                self.metrics.records.labels(meter, "unmetered").inc()
            return
        if not self.partition.counts(customer):
            return
        key = count_key(customer, meter, window, when)
        seen_key = record_key(source, record_id)
        copy = _Copy(meter, window, key, seen_key, Pending(seq, value, record_id))
        batch.copies.setdefault(seen_key, []).append(copy)

    async def _park(self, unreadable: list[tuple[Any, str, Exception]]) -> None:
        """Dead-letter the batch's unreadable messages, in order; DeadLetterFailed if one
        could not be (the checkpoint must not pass it)."""
        for msg, meter, exc in unreadable:
            self.metrics.records.labels(meter, "invalid").inc()
            reason = f"unreadable usage record: {reason_of(exc)}"
            if not await self.dead_letters.park(msg, meter, reason):
                raise DeadLetterFailed(f"{USAGE_STREAM}:{msg.metadata.sequence.stream}") from exc

    async def _claim(self, copies: list[_Copy]) -> _Copy | None:
        """The copy of one record that counts, if it is in this batch (its reservation, if
        any, handed over); the others are repeats."""
        # In stream order: the first copy claims the record, as if read one at a time.
        winner = await claimant(self.seen, copies[0].seen_key, copies[0].pending.seq)
        counts = next((c for c in copies if c.pending.seq == winner), None)
        for copy in copies:
            if copy is not counts:
                self.metrics.records.labels(copy.meter, "already_counted").inc()
        if counts is not None and self.reservations is not None:
            # A reservation under the record's id (a check that reserved, then recorded its
            # usage through billing_usage) becomes this usage rather than holding the same
            # units until it expires (the in-process client hands it over itself; then
            # this finds nothing). Its ledger keeps it until ``seq`` is counted: handed
            # over before the count it feeds is written.
            pending = counts.pending
            await self.reservations.consume(
                self.buckets[counts.window], counts.key, pending.id, pending.seq
            )
        return counts

    async def _add(self, group: list[_Copy]) -> None:
        """Apply one count key's records of the batch in one compare-and-set."""
        first = group[0]
        where = (first.window, first.key)

        def remember(entry: cas.Entry) -> None:
            self.written[where] = entry

        pending = [c.pending for c in group]
        kv = self.buckets[first.window]
        added = await apply_records(kv, first.key, pending, self.written.get(where), remember)
        applied = {r.seq for r in added}
        for copy in group:
            if copy.pending.seq in applied:
                self.metrics.records.labels(copy.meter, "counted").inc()
                self.metrics.quantity.labels(copy.meter).inc(copy.pending.value)
            else:
                self.metrics.records.labels(copy.meter, "already_counted").inc()

    async def apply(self, msgs: Sequence[Any]) -> None:
        """Count a fetched batch (already counted or unmetered records change nothing);
        records that cannot be read are dead-lettered (DeadLetterFailed if that failed).

        The round trips overlap, ``concurrency`` at a time: one claim in the seen bucket
        per record (copies within the batch settled in memory), then one compare-and-set
        per count key. Any failure raises once everything started has finished; the
        counter then re-reads from its checkpoint, and each entry's ``last_seq`` and the
        seen bucket skip what was applied, whichever keys were written before it failed.
        """
        batch = _Batch()
        for msg in msgs:
            self._sort(msg, batch)
        parking = asyncio.ensure_future(self._park(batch.unreadable))
        try:
            claimed = await overlap.each(list(batch.copies.values()), self._claim, self.concurrency)
            groups: dict[str, list[_Copy]] = {}
            for copy in sorted((c for c in claimed if c is not None), key=lambda c: c.pending.seq):
                groups.setdefault(f"{copy.window.value}:{copy.key}", []).append(copy)
            await overlap.each(list(groups.values()), self._add, self.concurrency)
        finally:
            await asyncio.wait([parking])
            parked = parking.exception()  # retrieved also when something else failed first
        if parked is not None:
            raise parked

    async def open(self) -> None:
        """Open (create if missing) the buckets the counter writes: ``run`` does it first."""
        self.buckets = await usage_buckets(self.js, self.bucket_replicas)
        self.seen = await key_value(
            self.js, SEEN_BUCKET, self.bucket_replicas, history=1, ttl=self.dedup_horizon
        )
        # consume() never reserves: the hold's own slot says when it expires, not this ttl.
        ledger = await reservations_bucket(self.js, self.bucket_replicas)
        self.reservations = Reservations(ledger, ttl=1)

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

        await self.open()
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
                if msgs:
                    await self.apply(msgs)
                    position = msgs[-1].metadata.sequence.stream
                    await self.save_checkpoint(position)
                await self.save_common_checkpoint()
                self.lag.set((await sub.consumer_info()).num_pending)
        finally:
            await sub.unsubscribe()
