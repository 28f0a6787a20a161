"""The in-process client (issue #19) against a real nats-server: KV writes reach its memory,
staleness grows when NATS stops, reservations stay exact across racing clients and become
usage once the counter has counted them."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from stripe_bridge.billing import usage_counter
from stripe_bridge.billing.projector import project, tiers_bucket
from stripe_bridge.billing.tiers import (
    DEFAULT_TIERS,
    TIERS_BUCKET,
    Cause,
    SubscriptionRecord,
    TierConfig,
    Update,
    Version,
)
from stripe_bridge.billing.usage_counter import UsageCounter, count_key, usage_buckets
from stripe_bridge.ops.natsserver import NatsServer
from stripe_bridge.streams import USAGE_STREAM
from stripe_bridge_entitlements import keys
from stripe_bridge_entitlements.client import EntitlementsClient
from stripe_bridge_entitlements.reservations import publish_tier_file
from stripe_bridge_entitlements.windows import Window
from stripe_bridge_testing.entitlements_bridge import provision_for_clients
from stripe_bridge_testing.waiting import wait_until_async

NOW = datetime.now(UTC)


def test_keys_are_the_counters_and_projectors_keys() -> None:
    # The counter writes with these very functions; the projector names its bucket itself.
    assert usage_counter.count_key is keys.count_key
    assert usage_counter.usage_bucket is keys.usage_bucket
    assert keys.TIERS_BUCKET == TIERS_BUCKET


async def provision(url: str, config: TierConfig = DEFAULT_TIERS) -> None:
    """What the bridge creates: USAGE, the buckets, the tier file the function publishes."""
    import nats

    nc = await nats.connect(url)
    try:
        await provision_for_clients(nc.jetstream(), config.model_dump_json().encode())
    finally:
        await nc.close()


@pytest.fixture
async def bridge(nats_server: NatsServer) -> AsyncIterator[NatsServer]:
    await provision(nats_server.url)
    yield nats_server


async def _make(url: str, customer: str, tier: str) -> None:
    import nats

    record = SubscriptionRecord(
        subscription_id=f"sub_{tier}",
        status="active",
        tier=tier,
        version=Version(created=2, rank=3, event_id=f"evt_{tier}"),
        cause=Cause(event_id=f"evt_{tier}", event_type="customer.subscription.created", created=2),
    )
    nc = await nats.connect(url)
    try:
        kv = await tiers_bucket(nc.jetstream())
        await project(kv, Update(customer_id=customer, subscription=record), DEFAULT_TIERS)
    finally:
        await nc.close()


async def _put_count(url: str, customer: str, meter: str, window: Window, used: float) -> None:
    import nats

    nc = await nats.connect(url)
    try:
        kv = (await usage_buckets(nc.jetstream()))[window]
        await kv.put(count_key(customer, meter, window, NOW), f'{{"used": {used}}}'.encode())
    finally:
        await nc.close()


async def test_kv_writes_of_tiers_and_counts_reach_the_clients_checks(
    bridge: NatsServer,
) -> None:
    client = await EntitlementsClient.connect(bridge.url)
    try:
        await client.serve("cus_a")
        first = client.check("cus_a", "api_calls", 100)
        assert (first.allowed, first.tier, first.remaining) == (True, "free", 100)
        assert client.check("cus_a", "shared_memory").allowed is False
        await _put_count(bridge.url, "cus_a", "api_calls", Window.DAY, 95)
        await wait_until_async(
            lambda: client.check("cus_a", "api_calls", 6).allowed is False,
            10,
            "the count reaches memory",
        )
        assert client.check("cus_a", "api_calls", 5).remaining == 5
        await _make(bridge.url, "cus_a", "teams")
        await wait_until_async(
            lambda: client.check("cus_a", "api_calls", 6).tier == "teams", 10, "the tier"
        )
        assert client.check("cus_a", "api_calls", 6).allowed
        assert client.check("cus_a", "shared_memory").allowed
        assert client.check("cus_a", "citizens", 10**9).allowed  # unlimited on teams
        assert client.check("cus_a", "no_such_thing").reason == "unknown_name"
        assert client.staleness == 0
        assert client.metrics.snapshot()["checks"]["allowed"] >= 4
    finally:
        await client.close()


async def test_staleness_grows_when_nats_stops_and_memory_recovers_when_it_is_back(
    tmp_path: Path,
) -> None:
    server = NatsServer(tmp_path / "nats").start()
    try:
        await provision(server.url)
        await _make(server.url, "cus_pro", "pro")  # pro: when_unavailable allow
        client = await EntitlementsClient.connect(server.url, unavailable_after=1)
        try:
            await client.serve("cus_pro")
            await client.serve("cus_free")  # free: when_unavailable deny
            assert client.check("cus_free", "api_calls").allowed
            server.stop()
            await wait_until_async(lambda: client.staleness > 0, 30, "staleness grows")
            # Within unavailable_after memory still answers; beyond it the tier's rule.
            await wait_until_async(
                lambda: client.check("cus_free", "api_calls").degraded, 10, "degraded"
            )
            assert client.staleness > 1
            free, pro = client.check("cus_free", "api_calls"), client.check("cus_pro", "tokens")
            assert (free.allowed, pro.allowed) == (False, True)
            assert free.reason == "nats_unavailable"
            held_free = await client.reserve("cus_free", "api_calls")
            held_pro = await client.reserve("cus_pro", "tokens")
            assert (held_free.allowed, held_pro.allowed) == (False, True)
            assert held_free.degraded and held_pro.reservation_id is None
            # NATS back (a restart: the watches' consumers are gone): current again only
            # once watched again, and a write made then reaches memory at once, not after
            # nats-py's missed heartbeats (~20 s).
            server.start()
            await wait_until_async(lambda: client.staleness == 0, 30, "current again")
            await _put_count(server.url, "cus_free", "api_calls", Window.DAY, 90)
            await wait_until_async(
                lambda: client.check("cus_free", "api_calls").remaining == 10,
                8,
                "a write after the restart reaches memory",
            )
        finally:
            await client.close()
    finally:
        server.stop()


async def test_racing_clients_reserve_exactly_and_recorded_usage_is_counted_once(
    bridge: NatsServer,
) -> None:
    import nats

    clients = [await EntitlementsClient.connect(bridge.url) for _ in range(4)]
    try:
        for c in clients:
            await c.serve("cus_race")
        # free: 100 api_calls a day; 4 clients x 30 reservations of 1 race for them.
        answers = await asyncio.gather(
            *(c.reserve("cus_race", "api_calls") for c in clients for _ in range(30))
        )
        granted = [a for a in answers if a.allowed]
        assert len(granted) == 100 and not any(a.degraded for a in answers)
        watcher = clients[3]
        await wait_until_async(
            lambda: watcher.check("cus_race", "api_calls").remaining == 0, 10, "holds in memory"
        )
        # Record two reservations as usage and release one: three units come back only
        # for the release; the recorded ones stay held until counted, then are usage.
        first, second, third = (a.reservation_id for a in granted[:3])
        assert first and second and third
        await clients[0].record_usage("cus_race", "api_calls", 1, reservation_id=first)
        await clients[1].record_usage("cus_race", "api_calls", 1, reservation_id=second)
        assert await clients[2].release("cus_race", "api_calls", third)
        await wait_until_async(
            lambda: watcher.check("cus_race", "api_calls").remaining == 1, 10, "the release"
        )
        nc = await nats.connect(bridge.url)
        counter = UsageCounter(nc, DEFAULT_TIERS, batch_size=16)
        stop = asyncio.Event()
        task = asyncio.create_task(counter.run(stop, fetch_wait=0.1))
        try:
            await wait_until_async(lambda: _counted(counter) == 2, 30, "two records counted")
            after = await clients[0].reserve("cus_race", "api_calls", 2)
            assert not after.allowed and after.remaining == 1  # 2 used + 97 held + 1 free
        finally:
            stop.set()
            await task
            await nc.close()
    finally:
        for c in clients:
            await c.close()


def _counted(counter: UsageCounter) -> float:
    total = 0.0
    for metric in counter.metrics.registry.collect():
        for sample in metric.samples:
            if sample.name == "stripe_bridge_usage_counted_quantity_total":
                total += sample.value
    return total


async def test_wait_for_tier_returns_once_the_projected_tier_reaches_memory(
    bridge: NatsServer,
) -> None:
    client = await EntitlementsClient.connect(bridge.url)
    try:
        await client.serve("cus_up")
        assert await client.wait_for_tier("cus_up", "free", 0)  # never projected: the first
        assert not await client.wait_for_tier("cus_up", "teams", 0.2)
        waiting = asyncio.create_task(client.wait_for_tier("cus_up", "teams", 30))
        await _make(bridge.url, "cus_up", "teams")
        assert await waiting
        assert client.check("cus_up", "shared_memory").allowed
        with pytest.raises(KeyError, match="not served"):
            await client.wait_for_tier("cus_other", "teams", 1)
    finally:
        await client.close()


async def test_wait_for_tier_wakes_when_the_tier_file_gains_the_tier(
    nats_server: NatsServer,
) -> None:
    import nats

    without_teams = DEFAULT_TIERS.model_copy(
        update={"tiers": [t for t in DEFAULT_TIERS.tiers if t.name != "teams"]}
    )
    await provision(nats_server.url, without_teams)
    await _make(nats_server.url, "cus_file", "teams")  # answered by the first tier for now
    client = await EntitlementsClient.connect(nats_server.url)
    try:
        await client.serve("cus_file")
        assert not await client.wait_for_tier("cus_file", "teams", 0)
        waiting = asyncio.create_task(client.wait_for_tier("cus_file", "teams", 300))
        nc = await nats.connect(nats_server.url)
        try:
            await publish_tier_file(nc.jetstream(), DEFAULT_TIERS.model_dump_json().encode())
        finally:
            await nc.close()
        # Woken by the tier file's update, not by its own 300 s deadline.
        await wait_until_async(waiting.done, 60, "wait_for_tier to see the new tier file")
        assert waiting.result()
    finally:
        await client.close()


async def test_record_usage_carries_agent_and_session_for_openmeter(bridge: NatsServer) -> None:
    import json

    import nats

    client = await EntitlementsClient.connect(bridge.url)
    try:
        await client.serve("cus_dims")
        seq = await client.record_usage(
            "cus_dims", "tokens", 42, record_id="r-1", agent_id="ada", session_id="s-1"
        )
    finally:
        await client.close()
    nc = await nats.connect(bridge.url)
    try:
        stored = await nc.jetstream().get_msg(USAGE_STREAM, seq)
    finally:
        await nc.close()
    assert stored.data is not None
    event = json.loads(stored.data)
    assert (event["id"], event["subject"], event["type"]) == ("r-1", "cus_dims", "tokens")
    assert event["data"] == {"value": 42, "agent_id": "ada", "session_id": "s-1"}


async def test_the_collector_exposes_what_the_alerts_and_dashboard_read(
    bridge: NatsServer,
) -> None:
    import re

    from prometheus_client import CollectorRegistry, generate_latest
    from stripe_bridge.deploy.alerts import alerts
    from stripe_bridge.deploy.dashboards import dashboard_files
    from stripe_bridge_entitlements.prometheus import ClientCollector
    from stripe_bridge_testing.repo import REPO_ROOT

    client = await EntitlementsClient.connect(bridge.url)
    try:
        await client.serve("cus_m")
        assert client.check("cus_m", "api_calls").allowed
        assert (await client.reserve("cus_m", "api_calls")).allowed
        registry = CollectorRegistry()
        registry.register(ClientCollector(client))
        text = generate_latest(registry).decode()
    finally:
        await client.close()
    answers = "stripe_bridge_entitlements_client_answers_total"
    assert answers + '{decision="allowed",kind="check"} 1.0' in text
    assert answers + '{decision="allowed",kind="reserve"} 1.0' in text
    assert "stripe_bridge_entitlements_client_staleness_seconds 0.0" in text
    exposed = set(re.findall(r"^(stripe_bridge_entitlements_client_\w+)", text, re.M))
    read = {
        name
        for source in [alert.expr for alert in alerts()]
        + [str(content) for content in dashboard_files(REPO_ROOT).values()]
        for name in re.findall(r"stripe_bridge_entitlements_client_\w+", source)
    }
    assert read and read <= exposed, read - exposed


async def test_a_forgotten_customer_stops_being_watched_and_leaves_no_consumers(
    bridge: NatsServer,
) -> None:
    import nats

    nc = await nats.connect(bridge.url)
    client = await EntitlementsClient.connect(bridge.url, watch_expiry=1)
    js = nc.jetstream()
    streams = [f"KV_{keys.usage_bucket(w)}" for w in Window] + ["KV_BILLING_TIERS"]
    streams.append("KV_BILLING_RESERVATIONS")

    async def consumers() -> int:
        infos = await asyncio.gather(*(js.stream_info(s) for s in streams))
        return sum(int(info.state.consumer_count or 0) for info in infos)

    try:
        await client.serve("cus_gone")
        assert await consumers() == 6  # tier, four windows' counts, ledgers
        await client.forget("cus_gone")
        with pytest.raises(KeyError):
            client.check("cus_gone", "api_calls")
        assert client.position("cus_gone", "api_calls", 0) is None
        # The server drops the watches' consumers soon (watch_expiry), not after 5 minutes.
        await wait_until_async(lambda: _none_left(consumers), 30, "consumers gone")
        await client.serve("cus_gone")  # and it can be served again
        assert client.check("cus_gone", "api_calls").allowed
    finally:
        await client.close()
        await nc.close()


async def _none_left(count: Any) -> bool:
    return bool(await count() == 0)


async def _fill(url: str, customer: str, window: Window, meters: int) -> None:
    """``meters`` counts of ``customer`` in ``window``: a watch of them takes a while to
    catch up (the window in which a customer can be forgotten mid catch-up)."""
    import nats

    nc = await nats.connect(url)
    try:
        kv = (await usage_buckets(nc.jetstream()))[window]
        body = b'{"used": 1}'
        for start in range(0, meters, 500):
            chunk = range(start, min(start + 500, meters))
            await asyncio.gather(
                *(kv.put(count_key(customer, f"m{i}", window, NOW), body) for i in chunk)
            )
    finally:
        await nc.close()


def _catching_up(client: EntitlementsClient, customer: str, window: Window) -> bool:
    """``customer``'s watch of ``window``'s counts has started and is delivering."""
    state = client._customers.get(customer)
    index = 1 + list(Window).index(window)  # the tier's watch comes first
    return (
        state is not None and len(state.watches) > index and state.watches[index].task is not None
    )


async def test_forgetting_a_customer_still_catching_up_ends_its_serve_at_once(
    bridge: NatsServer,
) -> None:
    await _fill(bridge.url, "cus_slow", Window.DAY, 3000)
    # attempt_timeout * 10 = 50 s: the old wait for a catch-up that never came.
    client = await EntitlementsClient.connect(bridge.url, nats_timeout=5)
    try:
        serving = asyncio.create_task(client.serve("cus_slow"))
        await wait_until_async(
            lambda: _catching_up(client, "cus_slow", Window.DAY) or serving.done(),
            30,
            "catching up",
            interval=0,  # every loop pass: catch-up of 3000 counts takes a few passes
        )
        assert not serving.done()
        await client.forget("cus_slow")
        await asyncio.wait_for(serving, 10)  # returns (nothing to keep), neither hangs nor raises
        assert client.position("cus_slow", "m1", 0) is None
        await client.serve("cus_slow")  # served again from scratch
        assert client.check("cus_slow", "api_calls").allowed
    finally:
        await client.close()


async def test_forgetting_a_customer_while_recovering_does_not_restart_the_recovery(
    tmp_path: Path,
) -> None:
    server = NatsServer(tmp_path / "nats").start()
    try:
        await provision(server.url)
        await _fill(server.url, "cus_slow", Window.DAY, 3000)
        client = await EntitlementsClient.connect(server.url, nats_timeout=5)
        try:
            await client.serve("cus_slow")
            await client.serve("cus_other")
            before = client._customers["cus_slow"].watches[1 + list(Window).index(Window.DAY)]
            old = before.task
            server.stop()
            await wait_until_async(lambda: client.staleness > 0, 30, "connection lost")
            server.start()
            # The recovery follows the slow watch again: forget its customer mid catch-up.
            await wait_until_async(
                lambda: before.task not in (None, old) or client.staleness == 0,
                30,
                "following again",
                interval=0,
            )
            assert client.staleness > 0
            await client.forget("cus_slow")
            # Current again at once (the old recovery waited 50 s for that catch-up, then
            # failed and started over with every watch).
            await wait_until_async(lambda: client.staleness == 0, 10, "current again")
            await _put_count(server.url, "cus_other", "api_calls", Window.DAY, 90)
            await wait_until_async(
                lambda: client.check("cus_other", "api_calls").remaining == 10,
                10,
                "the other customer's memory follows KV",
            )
        finally:
            await client.close()
    finally:
        server.stop()


@pytest.mark.parametrize("ttl", [0, -1, 86400.5, 10**6])
async def test_a_reservation_ttl_beyond_the_buckets_age_is_refused(
    bridge: NatsServer, ttl: float
) -> None:
    # A hold lasting longer than the bucket keeps its take-back marker (BUCKET_MAX_AGE) could
    # be taken back twice; the function caps its setting at 86400 s, the client as well.
    import nats

    nc = await nats.connect(bridge.url)
    try:
        with pytest.raises(ValueError, match="reservation_ttl"):
            EntitlementsClient(nc, reservation_ttl=ttl)
        assert EntitlementsClient(nc, reservation_ttl=86400).reservation_ttl == 86400
    finally:
        await nc.close()


async def test_evicting_a_customer_still_catching_up_is_no_watch_failure(
    bridge: NatsServer,
) -> None:
    # The function's memory holds one customer; a second evicts the first mid catch-up. That
    # is no failure: nothing counted, watching not paused for everyone (a false
    # EntitlementWatchesFailing before).
    from stripe_bridge.billing.watched import WatchedCustomers, WatchMetrics

    await _fill(bridge.url, "cus_slow", Window.DAY, 3000)
    client = await EntitlementsClient.connect(bridge.url, nats_timeout=5)
    metrics = WatchMetrics()
    watched = WatchedCustomers(client, 1, metrics)
    try:
        for customer in ("cus_slow", "cus_slow"):  # the second KV answer starts the watch
            watched.watch(customer)
        await wait_until_async(
            lambda: _catching_up(client, "cus_slow", Window.DAY) or not watched._starting,
            30,
            "catching up",
            interval=0,
        )
        assert watched._starting
        for customer in ("cus_next", "cus_next"):
            watched.watch(customer)
        await wait_until_async(lambda: not watched._starting, 10, "both watches settled")
        assert metrics.failures._value.get() == 0
        assert set(client._customers) == {"cus_next"}
        watched.watch("cus_third")
        watched.watch("cus_third")
        assert "cus_third" in watched._starting  # watching is not paused
    finally:
        await watched.close()
