"""The tier projector against real nats-server: JetStream consumer, KV compare-and-set, CLI."""

from __future__ import annotations

import asyncio
import json
import random
from pathlib import Path
from typing import Any

import pytest
from stripe_bridge.billing.projector import (
    ProjectorMetrics,
    TierProjector,
    project,
    read_state,
    tiers_bucket,
)
from stripe_bridge.billing.tiers import TierConfig, apply
from stripe_bridge.cli import main
from stripe_bridge.config import Settings
from stripe_bridge.envelope import StripeEvent
from stripe_bridge.jetstream import connect_options
from stripe_bridge.message import build_message
from stripe_bridge.ops.natsserver import NatsServer
from stripe_bridge_entitlements.reservations import LIMITS_BUCKET, TIER_FILE_KEY
from stripe_bridge_testing.consumer_processes import ConsumerProcess
from stripe_bridge_testing.waiting import wait_until, wait_until_async

from ..conftest import WriteBetween
from .sequences import CONFIG, CUSTOMER, SUB_A, deliveries, lifecycle, random_history
from .test_tiers import fold, updates


async def publish_deliveries(url: str, events: list[dict[str, Any]]) -> int:
    """Publish each delivery as the bridge would; repeats get their own Nats-Msg-Id.

    JetStream would drop a repeat within its duplicate window; Stripe's retries can come
    later than that, so the projector must see and absorb them itself.
    """
    import nats

    # As the bridge connects: the user in ``url`` gets its own inbox (nats/'s nats.conf).
    nc = await nats.connect(**connect_options(Settings(nats_url=url)))
    seen: dict[str, int] = {}
    try:
        js = nc.jetstream()
        for raw in events:
            message = build_message(StripeEvent.model_validate(raw), raw, "stripe")
            seen[raw["id"]] = seen.get(raw["id"], 0) + 1
            headers = {**message.headers, "Nats-Msg-Id": f"{raw['id']}#{seen[raw['id']]}"}
            await js.publish(message.subject, message.body, headers=headers)
    finally:
        await nc.close()
    return len(events)


async def run_projectors(url: str, count: int, durables: list[str]) -> list[TierProjector]:
    """Run one projector per durable until each has handled ``count`` messages."""
    import nats

    nc = await nats.connect(url)
    projectors = [TierProjector(nc, CONFIG, durable=d, batch_size=7) for d in durables]
    stop = asyncio.Event()
    tasks = [asyncio.create_task(p.run(stop, fetch_wait=0.2)) for p in projectors]

    def handled(p: TierProjector) -> float:
        total = 0.0
        for metric in p.metrics.registry.collect():
            for s in metric.samples:
                if s.name == "stripe_bridge_tiers_events_total":
                    total += s.value
        return total

    try:
        await wait_until_async(
            lambda: all(handled(p) >= count for p in projectors), 30, f"{count} events projected"
        )
    finally:
        stop.set()
        await asyncio.gather(*tasks)
        await nc.close()
    return projectors


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_shuffled_duplicated_deliveries_end_in_the_newest_state(
    stream: NatsServer, seed: int
) -> None:
    import nats

    rng = random.Random(seed)
    history = lifecycle() + random_history(rng, 12)
    sent = await publish_deliveries(stream.url, deliveries(history, rng))
    # Two projectors with their own consumers race on the same KV entries.
    projectors = await run_projectors(stream.url, sent, ["tiers-a", "tiers-b"])
    nc = await nats.connect(stream.url)
    try:
        state, revision = await read_state(await tiers_bucket(nc.jetstream()), CUSTOMER)
    finally:
        await nc.close()
    assert state == fold(history)
    assert revision is not None
    updated = sum(
        p.metrics.registry.get_sample_value(
            "stripe_bridge_tiers_events_total", {"event_type": t, "outcome": "updated"}
        )
        or 0
        for p in projectors
        for t in ("customer.subscription.updated", "customer.subscription.created")
    )
    assert updated >= 1


async def test_opening_publishes_the_tier_file_for_in_process_clients(
    nats_server: NatsServer,
) -> None:
    """project-tiers never scales to zero: clients find the limits without waiting for the
    entitlements function's first request (docs/entitlements.md)."""
    import nats

    nc = await nats.connect(nats_server.url)
    try:
        await TierProjector(nc, CONFIG).open()
        limits = await nc.jetstream().key_value(LIMITS_BUCKET)
        published = (await limits.get(TIER_FILE_KEY)).value or b""
    finally:
        await nc.close()
    assert TierConfig.model_validate_json(published) == CONFIG


async def test_concurrent_writers_compare_and_set(
    nats_server: NatsServer, write_between: WriteBetween
) -> None:
    import nats

    events = lifecycle()
    nc = await nats.connect(nats_server.url)
    metrics = ProjectorMetrics()
    try:
        kv = await tiers_bucket(nc.jetstream())
        *first, last = updates(events)
        # The last update lands between the first writer's read and its write, every time
        # (gathered tasks alone race in whatever order the JetStream API serves them); the
        # rest still run at once and may lose more races.
        write_between(lambda kv: project(kv, last, CONFIG, metrics))
        await asyncio.gather(*(project(kv, u, CONFIG, metrics) for u in first))
        state, _ = await read_state(kv, CUSTOMER)
    finally:
        await nc.close()
    assert state == fold(events)
    conflicts = metrics.registry.get_sample_value("stripe_bridge_tiers_cas_conflicts_total")
    assert conflicts is not None and conflicts >= 1


async def test_tier_command_shows_tier_and_cause(
    stream: NatsServer, capsys: pytest.CaptureFixture[str]
) -> None:
    import nats

    nc = await nats.connect(stream.url)
    try:
        kv = await tiers_bucket(nc.jetstream())
        state = None
        for update in updates(lifecycle()[:5]):
            await project(kv, update, CONFIG)
            state = apply(state, update, CONFIG)
    finally:
        await nc.close()
    code = await asyncio.to_thread(main, ["tier", CUSTOMER, "--nats-url", stream.url])
    out = capsys.readouterr().out
    assert code == 0, out
    assert out.splitlines()[0] == f"{CUSTOMER}: teams"
    assert "why: customer.subscription.updated evt_a4 created 2023-11-14T22:14:20+00:00" in out
    assert f"subscription {SUB_A}: active tier=teams" in out
    assert "entitlements: journeys <- entitlements.active_entitlement_summary.updated evt_e1" in out
    code = await asyncio.to_thread(main, ["tier", CUSTOMER, "--json", "--nats-url", stream.url])
    assert json.loads(capsys.readouterr().out)["tier"] == "teams"
    unknown = ["tier", "cus_nobody", "--json", "--nats-url", stream.url]
    assert await asyncio.to_thread(main, unknown) == 4
    captured = capsys.readouterr()
    assert captured.out == ""  # --json: JSON or nothing on stdout
    assert captured.err.startswith("cus_nobody: unknown")


def test_project_tiers_process_projects_and_stops_on_sigterm(
    stream: NatsServer, tmp_path: Path
) -> None:
    asyncio.run(publish_deliveries(stream.url, lifecycle()))
    process = ConsumerProcess(
        "project-tiers",
        ["--nats-url", stream.url],
        {},
        tmp_path,
        ready="stripe_bridge_tiers_consumer_lag",
    ).start()
    try:
        wait_until(
            lambda: (
                process.metric("stripe_bridge_tiers_consumer_lag") == 0
                and main(["tier", CUSTOMER, "--nats-url", stream.url]) == 0
            ),
            20,
            "customer projected",
        )
    finally:
        code = process.stop()
    assert code == 0
    assert "project-tiers stopped" in process.log()
