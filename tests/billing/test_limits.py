"""Tier limits: windows, the usage counter (exact under restarts and a second counter),
checks racing for the last unit, and the entitlements function with NATS up and down."""

from __future__ import annotations

import asyncio
import random
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from stripe_bridge.billing.entitlements import (
    CheckRequest,
    Entitlements,
    EntitlementSettings,
)
from stripe_bridge.billing.limits import Window, reset_at, window_start
from stripe_bridge.billing.projector import project, tiers_bucket
from stripe_bridge.billing.tiers import (
    DEFAULT_TIERS,
    Cause,
    SubscriptionRecord,
    TierConfig,
    Update,
    Version,
)
from stripe_bridge.billing.usage import UsageRecord, encode, provision_usage_streams
from stripe_bridge.billing.usage_counter import (
    Pending,
    UsageCounter,
    apply_records,
    count_key,
    read_count,
    usage_buckets,
)
from stripe_bridge.cli import main
from stripe_bridge.config import Settings
from stripe_bridge.ops.natsserver import NatsServer
from stripe_bridge_entitlements.reservations import Reservations, reservations_bucket
from stripe_bridge_testing.repo import REPO_ROOT
from stripe_bridge_testing.waiting import wait_until_async

from ..conftest import FunctionFactory, WriteBetween

NOW = datetime.now(UTC)


def test_windows_start_and_reset_on_utc_boundaries() -> None:
    when = datetime(2026, 12, 31, 23, 59, 30, tzinfo=UTC)
    assert window_start(Window.MINUTE, when) == int(
        datetime(2026, 12, 31, 23, 59, tzinfo=UTC).timestamp()
    )
    assert reset_at(Window.DAY, when) == datetime(2027, 1, 1, tzinfo=UTC)
    assert reset_at(Window.MONTH, when) == datetime(2027, 1, 1, tzinfo=UTC)
    assert reset_at(Window.MONTH, datetime(2026, 2, 14, tzinfo=UTC)) == datetime(
        2026, 3, 1, tzinfo=UTC
    )
    assert reset_at(Window.TOTAL, when) is None and window_start(Window.TOTAL, when) == 0


def test_shipped_tiers_are_the_documented_example() -> None:
    text = (REPO_ROOT / "docs" / "billing.md").read_text()
    block = re.search(r"<!-- tiers-example -->\n```yaml\n(.*?)```", text, re.S)
    assert block is not None, "docs/billing.md lost its tier file example"
    assert TierConfig.model_validate(yaml.safe_load(block[1])) == DEFAULT_TIERS
    free, pro, teams = DEFAULT_TIERS.tiers
    assert (free.limits["api_calls"], pro.limits["tokens"], teams.limits["requests"]) == (
        100,
        100_000,
        6_000,
    )
    assert teams.limits["members"] == 10 and teams.features["shared_memory"] is True


def test_limits_on_unknown_meters_are_refused() -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="unknown meters"):
        TierConfig.model_validate({"tiers": [{"name": "free", "limits": {"nope": 1}}]})


def _records(count: int) -> list[UsageRecord]:
    rng = random.Random(5)
    meters = ["tokens", "api_calls", "not_a_meter"]
    return [
        UsageRecord(
            meter=meters[i % 3],
            customer_id=f"cus_{i % 4}" if i % 5 else "acct/with spaces",
            value=rng.randrange(1, 50),
            id=f"r-{i}",
            time=NOW,
            agent_id=f"agent-{i % 2}",
        )
        for i in range(count)
    ]


async def _publish(url: str, records: list[UsageRecord]) -> None:
    import nats

    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        await provision_usage_streams(js)
        for record in [*records, *records[:20]]:  # producer retries: same ids
            subject, body, headers = encode(record)
            await js.publish(subject, body, headers=headers)
        # A lifecycle event on usage.lifecycle.>: not a meter the counter reads.
        await js.publish("usage.lifecycle.subscription.started", b"{}", headers={})
    finally:
        await nc.close()


async def _run_counter(nc: object, name: str, until: int, drain: bool = True) -> UsageCounter:
    """Run a counter until it read ``until`` records (and, with ``drain``, all there are)."""
    counter = UsageCounter(nc, DEFAULT_TIERS, name=name, batch_size=16)
    stop = asyncio.Event()
    task = asyncio.create_task(counter.run(stop, fetch_wait=0.1))

    def seen() -> float:
        total = 0.0
        for metric in counter.metrics.registry.collect():
            for s in metric.samples:
                if s.name == "stripe_bridge_usage_counted_records_total":
                    total += s.value
        return total

    try:
        lag = counter.lag
        await wait_until_async(
            lambda: seen() >= until and (not drain or lag._value.get() == 0),
            30,
            f"{name} read {until}",
        )
    finally:
        stop.set()
        await task
    return counter


async def test_counts_are_exact_across_restarts_and_a_second_counter(
    nats_server: NatsServer,
) -> None:
    import nats

    records = _records(240)
    await _publish(nats_server.url, records)
    expected: dict[str, float] = {}
    for r in records:
        window = DEFAULT_TIERS.meters.get(r.meter)
        if window is not None:
            key = count_key(r.customer_id, r.meter, window, NOW)
            expected[key] = expected.get(key, 0.0) + r.value
    nc = await nats.connect(nats_server.url)
    try:
        # A first run stops part-way; then it restarts while a second counter runs too.
        await _run_counter(nc, "counter", 50, drain=False)
        await asyncio.gather(_run_counter(nc, "counter", 1), _run_counter(nc, "other", 240))
        buckets = await usage_buckets(nc.jetstream())
        found = {}
        for key in expected:
            window = Window.DAY if ".api_calls." in key else Window.MONTH
            found[key] = (await read_count(buckets[window], key))[0].used
    finally:
        await nc.close()
    assert found == expected
    assert any(key.startswith("=") for key in found)  # a customer id KV keys cannot hold


def _entitlements(url: str) -> Entitlements:
    return Entitlements(DEFAULT_TIERS, Settings(nats_url=url), EntitlementSettings())


async def _make_pro(url: str, customer: str) -> None:
    import nats

    record = SubscriptionRecord(
        subscription_id="sub_1",
        status="active",
        tier="pro",
        version=Version(created=1, rank=3, event_id="evt_1"),
        cause=Cause(event_id="evt_1", event_type="customer.subscription.created", created=1),
    )
    nc = await nats.connect(url)
    try:
        kv = await tiers_bucket(nc.jetstream())
        await project(kv, Update(customer_id=customer, subscription=record), DEFAULT_TIERS)
    finally:
        await nc.close()


async def test_two_records_racing_on_one_count_are_both_added(
    nats_server: NatsServer, lost_writes: list[str], write_between: WriteBetween
) -> None:
    import nats

    nc = await nats.connect(nats_server.url)
    try:
        kv = (await usage_buckets(nc.jetstream()))[Window.MONTH]
        key = count_key("cus_race", "tokens", Window.MONTH, NOW)

        async def record_1(kv: Any) -> None:
            assert await apply_records(kv, key, [Pending(1, 2.0, "r1")])

        # Record 1 is added between record 2's read of the absent count and its write: that
        # write loses, is read again and adds on top.
        write_between(record_1)
        added = await apply_records(kv, key, [Pending(2, 3.0, "r2")])
        count, _ = await read_count(kv, key)
    finally:
        await nc.close()
    assert lost_writes == [key]
    assert added
    assert (count.used, count.last_seq) == (5.0, 2)


async def test_racing_checks_for_the_last_unit_allow_exactly_one(nats_server: NatsServer) -> None:
    import nats

    logic = _entitlements(nats_server.url)
    customer = "cus_race"
    try:
        # An unknown customer gets the first tier: free, 100 api_calls a day. Use 99.
        first = await logic.check(
            CheckRequest(customer=customer, meter="api_calls", quantity=99, reserve=True)
        )
        assert first["allowed"] and first["known"] is False and first["remaining"] == 1
        answers = await asyncio.gather(
            *(
                logic.check(CheckRequest(customer=customer, meter="api_calls", reserve=True))
                for _ in range(8)
            )
        )
        assert sum(a["allowed"] for a in answers) == 1
        assert [a["remaining"] for a in answers if not a["allowed"]] == [0.0] * 7
        winner = next(a for a in answers if a["allowed"])
        # The caller records what it reserved, under the reservation id, and hands the
        # reservation over to the usage it became: counted once, first held, then used.
        record = UsageRecord(
            meter="api_calls", customer_id=customer, value=1, id=winner["reservation_id"], time=NOW
        )
        nc = await nats.connect(nats_server.url)
        try:
            js = nc.jetstream()
            await provision_usage_streams(js)
            ack = await js.publish(*encode(record)[:2], headers=encode(record)[2])
            ledger = Reservations(await reservations_bucket(js), 300)
            counts = (await usage_buckets(js))[Window.DAY]
            key = count_key(customer, "api_calls", Window.DAY, NOW)
            assert await ledger.consume(counts, key, winner["reservation_id"], ack.seq)
            held = (await logic.view(customer))["meters"]["api_calls"]
            assert (held["used"], held["reserved"], held["remaining"]) == (0, 100, 0)
            await _run_counter(nc, "counter", 1)
        finally:
            await nc.close()
        after = await logic.view(customer)
        api = after["meters"]["api_calls"]
        assert (api["used"], api["reserved"], api["remaining"]) == (1, 99, 0)
        assert api["reset_at"] == reset_at(Window.DAY, datetime.now(UTC)).isoformat()  # type: ignore[union-attr]
    finally:
        await logic.close()


async def test_usage_recorded_over_http_takes_its_reservation_over(
    nats_server: NatsServer,
) -> None:
    """A caller that reserves through /v1/check and records the usage through billing_usage
    (which knows nothing of reservations) under the reservation id: the counter turns the
    reservation into that usage. Before, the units stayed held beside the usage until the
    reservation expired (300 s), and the customer's last units were wrongly denied."""
    import nats

    logic = _entitlements(nats_server.url)
    customer = "cus_http"
    try:
        # An unknown customer gets the first tier: free, 100 api_calls a day.
        held = await logic.check(
            CheckRequest(customer=customer, meter="api_calls", quantity=60, reserve=True)
        )
        assert held["allowed"] and held["remaining"] == 40
        record = UsageRecord(
            meter="api_calls", customer_id=customer, value=60, id=held["reservation_id"], time=NOW
        )
        nc = await nats.connect(nats_server.url)
        try:
            js = nc.jetstream()
            await provision_usage_streams(js)
            subject, body, headers = encode(record)
            await js.publish(subject, body, headers=headers)  # what billing_usage stores
            await _run_counter(nc, "counter", 1)
        finally:
            await nc.close()
        api = (await logic.view(customer))["meters"]["api_calls"]
        assert (api["used"], api["reserved"], api["remaining"]) == (60, 0, 40)
        last = await logic.check(CheckRequest(customer=customer, meter="api_calls", quantity=40))
        assert last["allowed"]
    finally:
        await logic.close()


async def test_entitlements_function_answers_and_degrades_per_tier(
    tmp_path: Path, start_function: FunctionFactory
) -> None:
    nats_server = NatsServer(tmp_path / "nats").start()
    try:
        await _make_pro(nats_server.url, "cus_pro")
        fn = start_function(
            "billing_entitlements", NATS_URL=nats_server.url, ENTITLEMENTS_UNAVAILABLE_AFTER="1"
        )
        async with httpx.AsyncClient(base_url=fn.url, timeout=10) as client:
            view = await client.get("/v1/customers/cus_pro/entitlements")
            check = await client.post(
                "/v1/check", json={"customer": "cus_new", "meter": "requests", "quantity": 61}
            )
            unknown_meter = await client.post("/v1/check", json={"customer": "c", "meter": "x"})
            no_path = await client.post("/v2/nothing", json={})
            wrong_method = await client.post("/v1/customers/cus_pro/entitlements")
            nats_server.stop()
            pro = await client.post("/v1/check", json={"customer": "cus_pro", "meter": "tokens"})
            free = await client.post("/v1/check", json={"customer": "cus_x", "meter": "tokens"})
            view_down = await client.get("/v1/customers/cus_pro/entitlements")
    finally:
        nats_server.stop()
    assert view.status_code == 200, view.text
    body = view.json()
    assert (body["tier"], body["known"], body["features"]["modes"]) == ("pro", True, "all")
    assert body["meters"]["tokens"] == {
        "window": "month",
        "limit": 100_000,
        "used": 0.0,
        "reserved": 0.0,
        "remaining": 100_000,
        "reset_at": reset_at(Window.MONTH, datetime.now(UTC)).isoformat(),  # type: ignore[union-attr]
    }
    assert check.status_code == 200
    assert check.json()["allowed"] is False and check.json()["limit"] == 60
    assert (unknown_meter.status_code, no_path.status_code) == (422, 404)
    assert wrong_method.status_code == 405 and wrong_method.headers["allow"] == "GET"
    # NATS gone: pro (seen before by this process) fails open, an unseen customer gets
    # the first tier's rule (free: closed); the view has nothing to show.
    assert pro.status_code == 200 and pro.json()["degraded"] is True
    assert (pro.json()["allowed"], free.json()["allowed"]) == (True, False)
    assert view_down.status_code == 503
    assert "nats_unavailable" in fn.log()


async def test_tier_command_shows_limits_and_usage(
    nats_server: NatsServer, capsys: pytest.CaptureFixture[str]
) -> None:
    import nats

    await _make_pro(nats_server.url, "cus_pro")
    await _publish(
        nats_server.url,
        [UsageRecord(meter="tokens", customer_id="cus_pro", value=1500, id="t-1", time=NOW)],
    )
    nc = await nats.connect(nats_server.url)
    try:
        await _run_counter(nc, "counter", 1)
    finally:
        await nc.close()
    code = await asyncio.to_thread(main, ["tier", "cus_pro", "--nats-url", nats_server.url])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "  tokens: 1500 of 100000 per month, resets " in out
    assert "  citizens: 0 of unlimited per total" in out
    assert "modes=all" in out
