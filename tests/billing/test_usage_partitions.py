"""count-usage partitions (``--partitions N --partition I``): running together they count
every record exactly once, a scale-out starts where the unpartitioned counter stopped, a
restarted partition resumes from its own checkpoint (real nats-server, real streams and
buckets)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import pytest
from stripe_bridge.billing.limits import Window
from stripe_bridge.billing.tiers import DEFAULT_TIERS
from stripe_bridge.billing.usage import UsageRecord, provision_usage_streams
from stripe_bridge.billing.usage_counter import SEEN_BUCKET, UsageCounter, read_count, usage_bucket
from stripe_bridge.billing.usage_partitions import Partition, common_checkpoint_key
from stripe_bridge.ops.backup import iter_stream
from stripe_bridge.ops.natsserver import NatsServer
from stripe_bridge.streams import USAGE_DLQ
from stripe_bridge_testing.waiting import wait_until_async

from .test_usage_batches import count_of, outcomes, publish, record

CUSTOMERS = [f"cus_{c}" for c in range(12)]


def test_the_customer_hash_is_stable_and_splits_every_customer_once() -> None:
    """sha256 of the key token, not Python's (salted) ``hash``: the same customer lands in
    the same partition in every process and release; each in exactly one of a set."""
    golden = [True, True, True, False]  # sha256(b"cus_a")[:8] is even, ...
    assert [Partition(0, 2).counts(c) for c in ("cus_a", "cus_b", "cus_c", "cus_d")] == golden
    for count in (1, 2, 3, 5):
        for customer in [*CUSTOMERS, "team/\u00e9"]:
            assert sum(p.counts(customer) for p in Partition(0, count).siblings()) == 1
    assert Partition(1, 2).checkpoint_key("counter") == "_position.counter.1-of-2"
    assert Partition().checkpoint_key("counter") == common_checkpoint_key("counter")
    with pytest.raises(ValueError):
        Partition(2, 2).check()


def records(first: int, last: int) -> list[UsageRecord]:
    """Records ``first``..``last`` (value n), spread over ``CUSTOMERS``."""
    return [record(n, CUSTOMERS[n % len(CUSTOMERS)]) for n in range(first, last + 1)]


async def run_together(counters: Sequence[UsageCounter], last: int) -> None:
    """Run ``counters`` at once until each one's checkpoint reaches sequence ``last`` (and,
    if they are a partitioned set, partition 0 has moved the common checkpoint there)."""
    for counter in counters:
        await counter.open()
    stop = asyncio.Event()
    tasks = [asyncio.create_task(c.run(stop, fetch_wait=0.1)) for c in counters]
    try:

        async def done() -> bool:
            for task in tasks:
                if task.done():
                    task.result()
            if not all([await c.checkpoint() >= last for c in counters]):
                return False
            if len(counters) == 1:
                return True
            common = common_checkpoint_key(counters[0].name)
            return (await read_count(counters[0].buckets[Window.TOTAL], common))[0].last_seq == last

        await wait_until_async(done, 60, f"every counter at sequence {last}")
    finally:
        stop.set()
        await asyncio.gather(*tasks)


def partitions(nc: Any, count: int, **kwargs: Any) -> list[UsageCounter]:
    return [
        UsageCounter(nc, DEFAULT_TIERS, partition=p, **kwargs)
        for p in Partition(0, count).siblings()
    ]


def total(counters: Sequence[UsageCounter]) -> dict[str, float]:
    """The counters' records by outcome, summed."""
    summed: dict[str, float] = {}
    for counter in counters:
        for outcome, value in outcomes(counter).items():
            summed[outcome] = summed.get(outcome, 0) + value
    return {k: v for k, v in summed.items() if v}


async def counts(counter: UsageCounter) -> dict[str, tuple[float, int]]:
    """Every customer's tokens count: (used, last_seq)."""
    found = {}
    for customer in CUSTOMERS:
        count = await count_of(counter, customer)
        found[customer] = (count.used, count.last_seq)
    return found


def expected(items: Sequence[UsageRecord]) -> dict[str, float]:
    return {c: sum(r.value for r in items if r.customer_id == c) for c in CUSTOMERS}


async def test_two_partitions_count_every_record_once_as_one_counter_does(
    nats_server: NatsServer,
) -> None:
    """120 records of 12 customers, 10 stored twice, an unreadable and an unmetered one:
    the single counter's counts, then (buckets emptied) two partitions at once: the same
    counts and last_seq, the same outcomes summed, the unreadable record parked once."""
    import nats

    nc = await nats.connect(nats_server.url)
    try:
        js = nc.jetstream()
        await provision_usage_streams(js)
        items = records(1, 120)
        for n, item in enumerate(items):
            await publish(js, item)
            if n == 50:
                await publish(js, b"{not json")
                await publish(js, UsageRecord(meter="unknown", customer_id="cus_1", value=1))
            if n % 12 == 11:  # a copy of a record of the same customer, stored again
                await publish(js, items[n - 11], copy=f"late-{n}")
        last = (await js.stream_info("USAGE")).state.last_seq

        single = UsageCounter(nc, DEFAULT_TIERS, batch_size=16)
        await run_together([single], last)
        alone = await counts(single)
        assert {c: used for c, (used, _) in alone.items()} == expected(items)
        assert total([single]) == {
            "counted": 120,
            "already_counted": 10,
            "invalid": 1,
            "unmetered": 1,
        }

        for bucket in [*(usage_bucket(w) for w in Window), SEEN_BUCKET]:
            await js.delete_key_value(bucket)
        pair = partitions(nc, 2, batch_size=16)
        await run_together(pair, last)
        assert await counts(pair[0]) == alone
        assert total(pair) == total([single])
        # Each counted its own customers, and both some.
        assert all(outcomes(p).get("counted") for p in pair)
        # Partition 0 parked it (USAGE_DLQ's Msg-Id dedup keeps the single counter's copy),
        # partition 1 did not.
        assert [m.data async for m in iter_stream(js, USAGE_DLQ)] == [b"{not json"]
        dead = [p.metrics.dead_letters.labels("counter", "tokens")._value.get() for p in pair]
        assert dead == [1, 0]
    finally:
        await nc.close()


async def test_a_scale_out_starts_from_the_unpartitioned_checkpoint_and_again_to_three(
    nats_server: NatsServer,
) -> None:
    """One counter counts records 1-30; two partitions then start where it stopped (they
    re-read nothing: no record is even already_counted) and count 31-60; partition 0 moves
    the common checkpoint to the lower of theirs (run_together waits for it), where three
    partitions start for 61-90, and then two again for 91-120 (their own checkpoints,
    left at 60, are behind the common one), each time re-reading nothing."""
    import nats

    nc = await nats.connect(nats_server.url)
    try:
        js = nc.jetstream()
        await provision_usage_streams(js)
        single = UsageCounter(nc, DEFAULT_TIERS, batch_size=8)
        layouts = [[single], partitions(nc, 2), partitions(nc, 3), partitions(nc, 2)]
        for step, layout in enumerate(layouts):
            for item in records(30 * step + 1, 30 * step + 30):
                await publish(js, item)
            await run_together(layout, 30 * step + 30)
            assert total(layout) == {"counted": 30}
            found = await counts(single)
            assert {c: used for c, (used, _) in found.items()} == expected(
                records(1, 30 * step + 30)
            )
    finally:
        await nc.close()


async def test_a_restarted_partition_resumes_from_its_own_checkpoint(
    nats_server: NatsServer,
) -> None:
    """Partition 1 of 2 stops while usage keeps arriving and starts again (a new process,
    no partition 0 ever moved the common checkpoint): it counts the rest of its customers'
    records once, re-reading none it had counted."""
    import nats

    nc = await nats.connect(nats_server.url)
    try:
        js = nc.jetstream()
        await provision_usage_streams(js)
        items = records(1, 48)
        for item in items:
            await publish(js, item)
        first = UsageCounter(nc, DEFAULT_TIERS, batch_size=8, partition=Partition(1, 2))
        await run_together([first], 48)
        stopped_at = await first.checkpoint()
        assert stopped_at == 48
        for item in records(49, 120):  # usage keeps arriving while it is down
            await publish(js, item)
            items.append(item)
        mine = [r for r in items if Partition(1, 2).counts(r.customer_id)]
        second = UsageCounter(nc, DEFAULT_TIERS, batch_size=8, partition=Partition(1, 2))
        await run_together([second], 120)

        before = [r for r in mine if int(r.id.removeprefix("r-")) <= stopped_at]
        assert outcomes(first) == {"counted": len(before)}
        assert outcomes(second) == {"counted": len(mine) - len(before)}
        found = await counts(second)
        ours = {c: v for c, v in expected(items).items() if Partition(1, 2).counts(c)}
        assert {c: found[c][0] for c in ours} == ours
        assert all(found[c] == (0, 0) for c in CUSTOMERS if c not in ours)
    finally:
        await nc.close()


def test_the_command_refuses_a_partition_outside_the_set() -> None:
    """``--partition 2 --partitions 2`` is a configuration error (exit 2, one line)."""
    from stripe_bridge.cli import main

    assert main(["count-usage", "--partitions", "2", "--partition", "2"]) == 2
