"""count-usage never skips a record silently: it dead-letters it to USAGE_DLQ, then counts
it once when ``redrive`` hands it back after a fix (real nats-server, real streams)."""

from __future__ import annotations

import asyncio
import json
from datetime import datetime
from typing import Any

from stripe_bridge.billing.limits import Window
from stripe_bridge.billing.tiers import DEFAULT_TIERS
from stripe_bridge.billing.usage import UsageRecord, encode, provision_usage_streams
from stripe_bridge.billing.usage_counter import Record, UsageCounter, count_key, read_count
from stripe_bridge.ops.backup import iter_stream
from stripe_bridge.ops.natsserver import NatsServer
from stripe_bridge.ops.redrive import KNOWN, Choice, redrive
from stripe_bridge.streams import USAGE_DLQ as DEAD_LETTER_STREAM
from stripe_bridge_events.deadletter import REASON_HEADER
from stripe_bridge_testing.waiting import wait_until_async

DEAD = "stripe_bridge_consumer_dead_letters_total"
WHEN = datetime.fromisoformat("2026-01-15T12:00:00+00:00")


class WholeNumbersOnly(UsageCounter):
    """The counter before the fix: it refused fractional values."""

    def read(self, data: bytes) -> Record:
        record = super().read(data)
        if not record.value.is_integer():
            raise ValueError("fractional value")
        return record


async def publish(js: Any, record: UsageRecord, value: Any = None) -> None:
    """``record`` into USAGE; ``value`` replaces its value as sent (what no model allows)."""
    subject, body, headers = encode(record)
    if value is not None:
        event = json.loads(body)
        event["data"]["value"] = value
        body = json.dumps(event).encode()
    await js.publish(subject, body, headers=headers)


async def run_until(counter: UsageCounter, done: Any, what: str) -> None:
    """Run ``counter`` until ``done()`` holds and it has nothing left to read."""
    stop = asyncio.Event()
    task = asyncio.create_task(counter.run(stop, fetch_wait=0.1))
    try:

        async def finished() -> bool:
            return bool(await done()) and counter.lag._value.get() == 0

        await wait_until_async(finished, 30, what)
    finally:
        stop.set()
        await task


async def dead_letters(js: Any) -> list[Any]:
    """The messages in USAGE_DLQ."""
    return [msg async for msg in iter_stream(js, DEAD_LETTER_STREAM)]


async def test_unreadable_record_is_dead_lettered_then_counted_once_after_redrive(
    nats_server: NatsServer,
) -> None:
    import nats

    def record(record_id: str, value: float) -> UsageRecord:
        return UsageRecord(
            meter="tokens", customer_id="cus_dl", value=value, id=record_id, time=WHEN
        )

    nc = await nats.connect(nats_server.url)
    try:
        js = nc.jetstream()
        await provision_usage_streams(js)
        await publish(js, record("u-1", 5))
        await publish(js, record("u-half", 2.5))
        await publish(js, record("u-inf", 1), value="Infinity")  # never countable
        await publish(js, record("u-3", 7))
        buggy = WholeNumbersOnly(nc, DEFAULT_TIERS)

        async def two_parked() -> bool:
            return len(await dead_letters(js)) == 2

        await run_until(buggy, two_parked, "two records dead-lettered")
        parked = await dead_letters(js)
        assert [m.subject for m in parked] == ["usage_dlq.tokens", "usage_dlq.tokens"]
        assert [m.headers["Nats-Msg-Id"] for m in parked] == [
            "dead:counter:USAGE:2",
            "dead:counter:USAGE:3",
        ]
        assert (
            "counter: unreadable usage record: ValueError: fractional value"
            in (parked[0].headers[REASON_HEADER])
        )
        assert "not a finite number" in parked[1].headers[REASON_HEADER]
        labels = {"consumer": "counter", "event_type": "tokens"}
        assert buggy.metrics.registry.get_sample_value(DEAD, labels) == 2
        kv = buggy.buckets[Window.MONTH]
        key = count_key("cus_dl", "tokens", Window.MONTH, WHEN)
        assert (await read_count(kv, key))[0].used == 12
        # The checkpoint passed them: they are in USAGE_DLQ, not lost, not blocking.
        assert await buggy.checkpoint() == 4

        # The fix is deployed; redrive hands both back to usage.tokens.
        moved = await redrive(js, KNOWN[DEAD_LETTER_STREAM], Choice(), False)
        assert [(r.target, r.outcome) for r in moved] == [("usage.tokens", "redriven")] * 2
        fixed = UsageCounter(nc, DEFAULT_TIERS)

        async def half_counted() -> bool:
            return (await read_count(kv, key))[0].used == 14.5

        await run_until(fixed, half_counted, "the redriven record counted")
        # Infinity is refused again, as a new dead letter; 2.5 is counted exactly once.
        (again,) = await dead_letters(js)
        assert again.headers["Nats-Msg-Id"] == "dead:counter:USAGE:6"
        assert (await read_count(kv, key))[0].used == 14.5
    finally:
        await nc.close()


async def test_another_consumers_redriven_record_is_not_counted_twice(
    nats_server: NatsServer,
) -> None:
    import nats

    nc = await nats.connect(nats_server.url)
    try:
        js = nc.jetstream()
        await provision_usage_streams(js)
        record = UsageRecord(meter="tokens", customer_id="cus_fw", value=3, id="u-fw", time=WHEN)
        subject, body, headers = encode(record)
        await js.publish(subject, body, headers=headers)
        # forward-openmeter's dead letter of it (OpenMeter refused it), as it stores one.
        refused = {**headers, REASON_HEADER: "400: invalid"}
        await js.publish("usage_dlq.tokens", body, headers=refused)
        counter = UsageCounter(nc, DEFAULT_TIERS)
        kv_key = count_key("cus_fw", "tokens", Window.MONTH, WHEN)

        async def counted() -> bool:
            return (
                bool(counter.buckets)
                and (await read_count(counter.buckets[Window.MONTH], kv_key))[0].used == 3
            )

        await run_until(counter, counted, "the record counted")
        await redrive(js, KNOWN[DEAD_LETTER_STREAM], Choice(), False)

        async def read_the_repeat() -> bool:
            return await counter.checkpoint() == 2

        await run_until(counter, read_the_repeat, "the redriven repeat read")
        assert (await read_count(counter.buckets[Window.MONTH], kv_key))[0].used == 3
    finally:
        await nc.close()


async def test_a_record_redriven_twice_is_counted_once(nats_server: NatsServer) -> None:
    import nats

    nc = await nats.connect(nats_server.url)
    try:
        js = nc.jetstream()
        await provision_usage_streams(js)
        record = UsageRecord(meter="tokens", customer_id="cus_2x", value=4, id="u-2x", time=WHEN)
        _, body, headers = encode(record)
        # The counter's dead letter and the forwarder's dead letter of its redriven copy
        # (the forwarder keeps every header, the counter's mark too).
        mine = {**headers, "Stripe-Bridge-Dead-Lettered-By": "counter", REASON_HEADER: "x"}
        for _ in range(2):
            await js.publish("usage_dlq.tokens", body, headers={**mine, "Nats-Msg-Id": str(_)})
        await redrive(js, KNOWN[DEAD_LETTER_STREAM], Choice(), False)
        counter = UsageCounter(nc, DEFAULT_TIERS)

        async def read_both() -> bool:
            return bool(counter.buckets) and await counter.checkpoint() == 2

        await run_until(counter, read_both, "both redriven copies read")
        key = count_key("cus_2x", "tokens", Window.MONTH, WHEN)
        assert (await read_count(counter.buckets[Window.MONTH], key))[0].used == 4
    finally:
        await nc.close()


async def test_a_late_retry_after_the_duplicate_window_is_counted_once(
    nats_server: NatsServer,
) -> None:
    """Issue #19: a record retried with the same id after USAGE's 2-hour duplicate window was
    stored again and counted again (14 for a value of 7). The stream then holds two copies;
    the counter counts the record once over its horizon, and a new id still counts."""
    import nats

    nc = await nats.connect(nats_server.url)
    try:
        js = nc.jetstream()
        await provision_usage_streams(js)
        late = UsageRecord(meter="tokens", customer_id="cus_late", value=7, id="rec-1", time=WHEN)
        await publish(js, late)
        # What the stream stores once its duplicate window has passed: the same record
        # under a fresh Nats-Msg-Id (the window is the stream's, not the counter's).
        subject, body, headers = encode(late)
        await js.publish(subject, body, headers={**headers, "Nats-Msg-Id": "after-window"})
        other = UsageRecord(meter="tokens", customer_id="cus_late", value=5, id="rec-2", time=WHEN)
        await publish(js, other)
        assert (await js.stream_info("USAGE")).state.messages == 3

        counter = UsageCounter(nc, DEFAULT_TIERS)
        key = count_key("cus_late", "tokens", Window.MONTH, WHEN)

        async def counted() -> bool:
            if not counter.buckets:
                return False
            return (await read_count(counter.buckets[Window.MONTH], key))[0].used == 12

        await run_until(counter, counted, "7 + 5 counted")
        records = counter.metrics.records
        assert records.labels("tokens", "already_counted")._value.get() == 1
        assert records.labels("tokens", "counted")._value.get() == 2
        # A restart re-reads nothing twice: the count stays 12.
        again = UsageCounter(nc, DEFAULT_TIERS, name="counter")
        await run_until(again, counted, "the count unchanged after a restart")
        assert (await read_count(again.buckets[Window.MONTH], key))[0].used == 12
    finally:
        await nc.close()
