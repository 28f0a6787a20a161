"""count-usage applies a fetched batch at once and still counts every record exactly once:
copies within the batch, many keys, a poisoned record in the middle, a failure between two
keys' writes (real nats-server, real streams and buckets)."""

from __future__ import annotations

import asyncio
import json
from datetime import datetime
from typing import Any

import pytest
from stripe_bridge.billing.deadletters import DeadLetterFailed
from stripe_bridge.billing.limits import Window
from stripe_bridge.billing.tiers import DEFAULT_TIERS
from stripe_bridge.billing.usage import UsageRecord, encode, provision_usage_streams
from stripe_bridge.billing.usage_counter import (
    MeterCount,
    UsageCounter,
    count_key,
    read_count,
)
from stripe_bridge.ops.backup import iter_stream
from stripe_bridge.ops.natsserver import NatsServer
from stripe_bridge.streams import USAGE_DLQ
from stripe_bridge_entitlements import cas
from stripe_bridge_testing.waiting import wait_until_async

WHEN = datetime.fromisoformat("2026-11-15T12:00:00+00:00")
MONTH_STREAM = "KV_BILLING_USAGE_MONTH"


def record(n: int, customer: str) -> UsageRecord:
    """Record ``n`` (value ``n``) of ``customer``'s tokens, counted in the month window."""
    return UsageRecord(meter="tokens", customer_id=customer, value=n, id=f"r-{n}", time=WHEN)


async def publish(js: Any, item: UsageRecord | bytes, copy: str | None = None) -> None:
    """A record into USAGE (``copy``: stored again under this Nats-Msg-Id, as a producer's
    late retry is), or raw bytes on usage.tokens: what no counter can read."""
    if isinstance(item, bytes):
        await js.publish("usage.tokens", item, headers={"Nats-Msg-Id": "poison"})
        return
    subject, body, headers = encode(item)
    await js.publish(subject, body, headers=headers | ({"Nats-Msg-Id": copy} if copy else {}))


async def fetch_all(js: Any, count: int) -> list[Any]:
    """USAGE's first ``count`` messages, in order: one batch for ``UsageCounter.apply``."""
    sub = await js.pull_subscribe("usage.*", durable="batch", stream="USAGE")
    msgs: list[Any] = []

    async def fetched() -> bool:
        msgs.extend(await sub.fetch(count - len(msgs), timeout=5))
        return len(msgs) == count

    await wait_until_async(fetched, 30, f"{count} messages fetched")
    await sub.unsubscribe()
    return msgs


def outcomes(counter: UsageCounter) -> dict[str, float]:
    """The counter's records by outcome."""
    found: dict[str, float] = {}
    for metric in counter.metrics.registry.collect():
        for s in metric.samples:
            if s.name == "stripe_bridge_usage_counted_records_total":
                found[s.labels["outcome"]] = found.get(s.labels["outcome"], 0) + s.value
    return found


async def count_of(counter: UsageCounter, customer: str) -> MeterCount:
    key = count_key(customer, "tokens", Window.MONTH, WHEN)
    return (await read_count(counter.buckets[Window.MONTH], key))[0]


async def test_a_batch_writes_each_count_once_and_counts_every_record_once(
    nats_server: NatsServer,
) -> None:
    """64 records of 4 customers, 8 of them stored twice and a poisoned one in the middle:
    4 count writes, not one per record (the counter before batches made 64)."""
    import nats

    nc = await nats.connect(nats_server.url)
    try:
        js = nc.jetstream()
        await provision_usage_streams(js)
        records = [record(n, f"cus_{n % 4}") for n in range(1, 65)]
        for n, item in enumerate(records):
            await publish(js, item)
            if n == 31:
                await publish(js, b"{not json")
            if n % 8 == 7:  # a copy of an earlier record of the same batch
                await publish(js, records[n - 4], copy=f"late-{n}")
        msgs = await fetch_all(js, 64 + 8 + 1)
        counter = UsageCounter(nc, DEFAULT_TIERS)
        await counter.open()
        await counter.apply(msgs)

        for c in range(4):
            mine = [r for r in records if r.customer_id == f"cus_{c}"]
            expected = sum(r.value for r in mine)
            firsts = [m for m in msgs if not m.headers["Nats-Msg-Id"].startswith("late-")]
            last = max(m.metadata.sequence.stream for m in firsts if b'"cus_%d"' % c in m.data)
            count = await count_of(counter, f"cus_{c}")
            assert (count.used, count.last_seq) == (expected, last)
        assert (await js.stream_info(MONTH_STREAM)).state.last_seq == 4
        assert outcomes(counter) == {"counted": 64, "already_counted": 8, "invalid": 1}
        assert counter.metrics.quantity.labels("tokens")._value.get() == sum(range(1, 65))
        (parked,) = [m async for m in iter_stream(js, USAGE_DLQ)]
        assert parked.data == b"{not json"

        # Read again (a restart from an older checkpoint): nothing is counted twice.
        await counter.apply(msgs)
        assert (await js.stream_info(MONTH_STREAM)).state.last_seq == 4
        assert outcomes(counter) == {"counted": 64, "already_counted": 8 + 72, "invalid": 2}
        assert len([m async for m in iter_stream(js, USAGE_DLQ)]) == 1
    finally:
        await nc.close()


async def test_a_failure_between_two_keys_writes_is_counted_exactly_once_after_restart(
    nats_server: NatsServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another writer keeps changing cus_b's count while the batch is applied: cus_a's
    write lands, cus_b's gives up (Contention), the counter restarts from its checkpoint,
    re-reads the batch, skips cus_a's records and counts cus_b's once."""
    import nats

    nc = await nats.connect(nats_server.url)
    try:
        js = nc.jetstream()
        await provision_usage_streams(js)
        for n in range(1, 7):  # a, b, a, b, a, b: one batch
            await publish(js, record(n, "cus_a" if n % 2 else "cus_b"))
        counter = UsageCounter(nc, DEFAULT_TIERS)
        await counter.open()
        contended = count_key("cus_b", "tokens", Window.MONTH, WHEN)
        lost: list[int] = []
        write_at = cas.write_at

        async def another_writer_first(
            bucket: Any, key: str, value: bytes, revision: int | None
        ) -> int | None:
            if key == contended and len(lost) < cas.CAS_ATTEMPTS:
                # A real write between the counter's read and its write (the entry's value
                # unchanged, its revision not): the counter's write is refused.
                entry = await cas.read(bucket, key)
                await bucket.put(key, entry.value or MeterCount().model_dump_json().encode())
                lost.append(1)
            return await write_at(bucket, key, value, revision)

        monkeypatch.setattr(cas, "write_at", another_writer_first)
        stop = asyncio.Event()
        task = asyncio.create_task(counter.run(stop, fetch_wait=0.1))
        try:

            async def done() -> bool:
                if task.done():
                    task.result()
                return await counter.checkpoint() == 6

            await wait_until_async(done, 60, "the batch counted after a restart")
        finally:
            stop.set()
            await task
        assert len(lost) == cas.CAS_ATTEMPTS  # the first pass gave up on cus_b
        a, b = await count_of(counter, "cus_a"), await count_of(counter, "cus_b")
        assert (a.used, a.last_seq, b.used, b.last_seq) == (1 + 3 + 5, 5, 2 + 4 + 6, 6)
        # cus_a's three were counted by the first pass and skipped by the second.
        assert outcomes(counter) == {"counted": 6, "already_counted": 3}
        assert counter.metrics.quantity.labels("tokens")._value.get() == 21
    finally:
        await nc.close()


async def test_an_unparked_poisoned_record_holds_the_batch_until_it_is_parked(
    nats_server: NatsServer,
) -> None:
    """USAGE_DLQ is gone: the batch raises DeadLetterFailed (the checkpoint must not pass
    the poisoned record) after counting the rest; applied again once the dead letters are
    back, it parks the record once and counts nothing twice."""
    import nats

    nc = await nats.connect(nats_server.url)
    try:
        js = nc.jetstream()
        await provision_usage_streams(js)
        await publish(js, record(1, "cus_p"))
        await publish(js, b'{"type": "tokens"}')
        await publish(js, record(2, "cus_q"))
        msgs = await fetch_all(js, 3)
        await js.delete_stream(USAGE_DLQ)
        counter = UsageCounter(nc, DEFAULT_TIERS)
        await counter.open()
        with pytest.raises(DeadLetterFailed):
            await counter.apply(msgs)
        assert [(await count_of(counter, c)).used for c in ("cus_p", "cus_q")] == [1, 2]

        await provision_usage_streams(js)
        await counter.apply(msgs)
        (parked,) = [m async for m in iter_stream(js, USAGE_DLQ)]
        assert json.loads(parked.data) == {"type": "tokens"}
        assert [(await count_of(counter, c)).used for c in ("cus_p", "cus_q")] == [1, 2]
        assert outcomes(counter) == {"counted": 2, "already_counted": 2, "invalid": 2}
    finally:
        await nc.close()


async def test_a_counter_writes_its_own_entries_again_without_reading_them(
    nats_server: NatsServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The next batch of a customer writes at the revision the counter wrote last: no read
    (one round trip of a compare-and-set's two). A second counter writing in between makes
    that write lose once; it reads then and adds only what the other did not."""
    import nats

    nc = await nats.connect(nats_server.url)
    try:
        js = nc.jetstream()
        await provision_usage_streams(js)
        for n in range(1, 6):
            await publish(js, record(n, "cus_w"))
        msgs = await fetch_all(js, 5)
        counter, other = UsageCounter(nc, DEFAULT_TIERS), UsageCounter(nc, DEFAULT_TIERS, "other")
        await counter.open()
        await other.open()
        await counter.apply(msgs[:2])
        await other.apply(msgs[:3])  # adds record 3 only: 1 and 2 are below last_seq

        key = count_key("cus_w", "tokens", Window.MONTH, WHEN)
        reads: list[str] = []
        read = cas.read

        async def counted_read(kv: Any, entry_key: str) -> cas.Entry:
            reads.append(entry_key)
            return await read(kv, entry_key)

        monkeypatch.setattr(cas, "read", counted_read)
        await counter.apply(msgs[2:4])  # its copy of the entry is stale: one read
        assert reads.count(key) == 1
        await counter.apply(msgs[4:])  # its own last write: none
        assert reads.count(key) == 1

        count = await count_of(counter, "cus_w")
        assert (count.used, count.last_seq) == (1 + 2 + 3 + 4 + 5, 5)
        assert outcomes(counter) == {"counted": 4, "already_counted": 1}
        assert outcomes(other) == {"counted": 1, "already_counted": 2}
    finally:
        await nc.close()
