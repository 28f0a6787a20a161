"""The OpenMeter forwarder against real nats-server and the ingest stand-in."""

from __future__ import annotations

import asyncio

import pytest
from stripe_bridge.billing.breaker import BreakerState
from stripe_bridge.billing.openmeter import Forwarder, OpenMeterAuthError
from stripe_bridge.billing.usage import DEAD_LETTER_REASON_HEADER, provision_usage_streams
from stripe_bridge.ops.natsserver import NatsServer
from stripe_bridge.streams import USAGE_DLQ as DEAD_LETTER_STREAM
from stripe_bridge_testing.deliveries import stream_messages
from stripe_bridge_testing.openmeter_standin import IngestStandIn
from stripe_bridge_testing.waiting import wait_until_async

from .conftest import forwarder_settings, publish, records, running_forwarder


def sample(forwarder_metrics: object, name: str, labels: dict[str, str] | None = None) -> float:
    """A sample's value from the forwarder's registry (0 when absent)."""
    value = forwarder_metrics.registry.get_sample_value(name, labels or {})  # type: ignore[attr-defined]
    return float(value or 0.0)


async def test_every_event_is_delivered_once_and_acked(
    usage_nats: NatsServer, ingest: IngestStandIn
) -> None:
    await publish(usage_nats.url, records(45))
    async with running_forwarder(usage_nats.url, forwarder_settings(ingest)) as forwarder:
        await wait_until_async(lambda: len(ingest.accepted) >= 45, 20, "45 events accepted")
        await wait_until_async(
            lambda: sample(forwarder.metrics, "stripe_bridge_openmeter_events_sent_total") == 45,
            5,
            "45 acked",
        )
        # The lag gauges refresh at most once a second while batches keep coming, and at
        # once on the first empty fetch after them: wait for that refresh, not for a time.
        await wait_until_async(
            lambda: (
                sample(forwarder.metrics, "stripe_bridge_openmeter_consumer_lag") == 0
                and sample(forwarder.metrics, "stripe_bridge_openmeter_ack_pending") == 0
            ),
            10,
            "lag and ack pending back to 0",
        )
    counts = ingest.counts()
    assert len(counts) == 45
    assert set(counts.values()) == {1}
    assert {source for _, source in counts} == {"stripe-bridge"}
    assert max(r.events for r in ingest.requests) == 10
    assert sample(forwarder.metrics, "stripe_bridge_openmeter_consumer_lag") == 0
    assert sample(forwarder.metrics, "stripe_bridge_openmeter_ack_pending") == 0


async def test_429_storm_honours_retry_after(usage_nats: NatsServer, ingest: IngestStandIn) -> None:
    ingest.fail_next(3, 429, retry_after="1")
    await publish(usage_nats.url, records(20))
    settings = forwarder_settings(ingest, batch_size=20)
    async with running_forwarder(usage_nats.url, settings) as forwarder:
        await wait_until_async(lambda: len(ingest.accepted) >= 20, 20, "20 events accepted")
    statuses = [r.status for r in ingest.requests]
    assert statuses[:4] == [429, 429, 429, 204]
    gaps = [b.at - a.at for a, b in zip(ingest.requests, ingest.requests[1:], strict=False)][:3]
    assert all(gap >= 0.95 for gap in gaps), gaps
    assert set(ingest.counts().values()) == {1}
    retried = {"reason": "rate_limited"}
    assert sample(forwarder.metrics, "stripe_bridge_openmeter_events_retried_total", retried) == 60
    # Rate limiting is the service working as designed, not failing: the breaker stays shut.
    transitions = "stripe_bridge_openmeter_breaker_transitions_total"
    assert sample(forwarder.metrics, transitions, {"state": "open"}) == 0


async def test_outage_longer_than_breaker_timeout(
    usage_nats: NatsServer, ingest: IngestStandIn
) -> None:
    await publish(usage_nats.url, records(30))
    ingest.outage(3.0)
    settings = forwarder_settings(ingest, breaker_failures=3, breaker_reset=1.0)
    async with running_forwarder(usage_nats.url, settings) as forwarder:
        await wait_until_async(
            lambda: len(ingest.accepted) >= 30, 30, "30 events accepted after outage"
        )
        assert forwarder.breaker.state is BreakerState.CLOSED
    metrics = forwarder.metrics
    transitions = "stripe_bridge_openmeter_breaker_transitions_total"
    assert sample(metrics, transitions, {"state": "open"}) >= 2  # opened, half-open trial failed
    assert sample(metrics, transitions, {"state": "half_open"}) >= 2
    assert sample(metrics, transitions, {"state": "closed"}) == 1
    assert sample(metrics, "stripe_bridge_openmeter_breaker_state") == 0
    failed = [r for r in ingest.requests if r.status == 503]
    # While open, the breaker lets one trial through per reset timeout instead of hammering.
    assert 3 <= len(failed) <= 3 + 3 / settings.breaker_reset + 1
    assert set(ingest.counts().values()) == {1}
    assert len(ingest.counts()) == 30


async def test_invalid_event_is_isolated_and_dead_lettered(
    usage_nats: NatsServer, ingest: IngestStandIn
) -> None:
    import nats

    await publish(usage_nats.url, records(7))
    nc = await nats.connect(usage_nats.url)
    bad = b'{"specversion":"1.0","id":"bad-1","source":"x","type":"tokens","subject":""}'
    await nc.jetstream().publish("usage.tokens", bad, headers={"Nats-Msg-Id": "bad-1"})
    await nc.close()
    await publish(usage_nats.url, records(2, prefix="after"))
    async with running_forwarder(usage_nats.url, forwarder_settings(ingest)) as forwarder:
        await wait_until_async(lambda: len(ingest.accepted) >= 9, 20, "the 9 valid events accepted")
        await wait_until_async(
            lambda: (
                sample(forwarder.metrics, "stripe_bridge_openmeter_events_dead_lettered_total") == 1
            ),
            5,
            "one dead letter",
        )
    assert len(ingest.counts()) == 9
    assert ("bad-1", "x") not in ingest.counts()
    (dead,) = await stream_messages(usage_nats.url, DEAD_LETTER_STREAM)
    assert dead.subject == "usage_dlq.tokens"
    assert dead.data == bad
    assert "subject must be a non-empty string" in dead.headers[DEAD_LETTER_REASON_HEADER]
    assert dead.headers[DEAD_LETTER_REASON_HEADER].startswith("400")


async def test_refused_api_key_stops_without_acking(
    usage_nats: NatsServer, ingest: IngestStandIn
) -> None:
    await publish(usage_nats.url, records(5))
    settings = forwarder_settings(ingest, api_key="wrong")
    with pytest.raises(OpenMeterAuthError):
        async with running_forwarder(usage_nats.url, settings) as forwarder:
            await wait_until_async(lambda: bool(ingest.requests), 30, "a request")
    assert ingest.accepted == []
    assert sample(forwarder.metrics, "stripe_bridge_openmeter_requests_total",
                  {"verdict": "unauthorized"}) == 1  # fmt: skip


async def test_nats_restart_is_survived(usage_nats: NatsServer, ingest: IngestStandIn) -> None:
    await publish(usage_nats.url, records(20, prefix="one"))
    async with running_forwarder(usage_nats.url, forwarder_settings(ingest)) as forwarder:
        await wait_until_async(lambda: len(ingest.counts()) >= 20, 20, "first 20 accepted")
        usage_nats.stop()
        usage_nats.start()  # same port and store: the stream and the durable consumer persist
        await publish(usage_nats.url, records(20, prefix="two"))
        await wait_until_async(
            lambda: len(ingest.counts()) >= 40, 30, "all 40 accepted after restart"
        )
    assert len(ingest.counts()) == 40
    assert sample(forwarder.metrics, "stripe_bridge_openmeter_events_sent_total") >= 40


async def test_on_bound_runs_only_once_the_consumer_is_bound(
    nats_server: NatsServer, ingest: IngestStandIn
) -> None:
    """The commands serve /metrics (the readiness probe) from ``on_bound``."""
    from nats.js.errors import NotFoundError

    import nats

    nc = await nats.connect(nats_server.url)
    try:
        calls: list[int] = []
        # No USAGE stream yet: the bind fails, so "ready" must never be signalled.
        with pytest.raises(NotFoundError):
            await Forwarder(nc, forwarder_settings(ingest)).run(
                asyncio.Event(), on_bound=lambda: calls.append(1)
            )
        assert calls == []
        await provision_usage_streams(nc.jetstream())
        stop, bound = asyncio.Event(), asyncio.Event()
        settings = forwarder_settings(ingest)
        task = asyncio.create_task(Forwarder(nc, settings).run(stop, on_bound=bound.set))
        await asyncio.wait_for(bound.wait(), 10)
        info = await nc.jetstream().consumer_info("USAGE", settings.durable)
        assert info.config.durable_name == settings.durable
        stop.set()
        await asyncio.wait_for(task, 10)
    finally:
        await nc.close()


async def test_412_dead_letters_its_batch_without_blocking_or_opening_the_breaker(
    usage_nats: NatsServer, ingest: IngestStandIn
) -> None:
    """412: OpenMeter refused the request on a precondition of its own, not an outage.

    The same request would be refused again: the batch goes to USAGE_DLQ with the reason
    (alerted on, redrivable), the breaker stays closed and later events flow.
    """
    await publish(usage_nats.url, records(10))
    ingest.fail_next(1, 412)
    settings = forwarder_settings(ingest, breaker_failures=1)
    async with running_forwarder(usage_nats.url, settings) as forwarder:
        dead = "stripe_bridge_openmeter_events_dead_lettered_total"
        await wait_until_async(
            lambda: sample(forwarder.metrics, dead) == 10, 20, "the refused batch dead-lettered"
        )
        await publish(usage_nats.url, records(5, prefix="later"))
        await wait_until_async(lambda: len(ingest.accepted) >= 5, 20, "later events accepted")
    assert [status for status in (r.status for r in ingest.requests)][:2] == [412, 204]
    assert {i for i, _ in ingest.counts()} == {f"later-{i:05d}" for i in range(5)}
    letters = await stream_messages(usage_nats.url, DEAD_LETTER_STREAM)
    assert [m.headers["Nats-Msg-Id"] for m in letters] == [f"u-{i:05d}" for i in range(10)]
    assert all(m.headers[DEAD_LETTER_REASON_HEADER] == "412: scripted fault" for m in letters)
    verdict = {"verdict": "precondition_failed"}
    assert sample(forwarder.metrics, "stripe_bridge_openmeter_requests_total", verdict) == 1
    transitions = "stripe_bridge_openmeter_breaker_transitions_total"
    assert sample(forwarder.metrics, transitions, {"state": "open"}) == 0


async def test_5xx_mid_batch_loses_nothing_and_repeats_only_what_was_ingested(
    usage_nats: NatsServer, ingest: IngestStandIn
) -> None:
    """OpenMeter ingests event by event: a 500 after 3 of 10 keeps those 3.

    The forwarder cannot know which were kept, so it sends the batch again: every event
    arrives, the 3 arrive twice. Without dedupe (self-hosted's default) they are metered
    twice; with it, once (test_dedupe_meters_each_id_and_source_once).
    """
    await publish(usage_nats.url, records(10))
    ingest.fail_midway(after=3)
    async with running_forwarder(usage_nats.url, forwarder_settings(ingest)) as forwarder:
        await wait_until_async(
            lambda: sample(forwarder.metrics, "stripe_bridge_openmeter_events_sent_total") == 10,
            20,
            "the batch accepted and acked",
        )
    assert [r.status for r in ingest.requests] == [500, 204]
    counts = ingest.counts()
    assert len(counts) == 10
    assert sorted(i for (i, _), n in counts.items() if n == 2) == ["u-00000", "u-00001", "u-00002"]
    assert sum(counts.values()) == 13


async def test_a_long_wait_outlives_nats_going_away(
    usage_nats: NatsServer, ingest: IngestStandIn, caplog: pytest.LogCaptureFixture
) -> None:
    """While OpenMeter is down the forwarder holds its batch and progress-acks it; a NATS node
    going away then (the staging run stops one mid-outage) made that progress ack raise
    OutboundBufferLimitError (no buffering while disconnected, as the runner connects), and
    the forwarder died with its batch. It waits on, and delivers once both are back."""
    import nats

    caplog.set_level("INFO", logger="stripe_bridge.billing.openmeter")
    await publish(usage_nats.url, records(10))
    ingest.outage(3600)
    settings = forwarder_settings(ingest, ack_wait=1.5, breaker_reset=0.5)
    nc = await nats.connect(
        usage_nats.url, pending_size=0, reconnect_time_wait=0.2, max_reconnect_attempts=-1
    )
    forwarder = Forwarder(nc, settings)
    stop = asyncio.Event()
    task = asyncio.create_task(forwarder.run(stop))
    try:
        await wait_until_async(
            lambda: any(r.status == 503 for r in ingest.requests), 20, "a batch refused"
        )
        usage_nats.stop()

        def deferred() -> bool:
            return task.done() or "progress ack deferred" in caplog.text

        await wait_until_async(deferred, 20, "a progress ack while NATS is away")
        assert not task.done(), task.exception()
        usage_nats.start()  # same port and store: the stream and the durable persist
        ingest.outage(0)
        await wait_until_async(lambda: len(ingest.counts()) >= 10, 30, "10 accepted after both")
        assert not task.done()
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)
        await nc.close()
    assert len(ingest.counts()) == 10
