"""The entitlements function answers from memory (issue #19): the customers it served are
watched (bounded, least recently answered out), KV writes reach its answers, a watch that
ends or a connection that is lost sends answers back to KV, and racing reservers still
never over-grant. Real nats-server throughout."""

from __future__ import annotations

import asyncio
import json
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from stripe_bridge.billing import watched
from stripe_bridge.billing.endpoints import Refusal
from stripe_bridge.billing.entitlements import (
    CheckRequest,
    Entitlements,
    EntitlementSettings,
    NatsUnavailable,
)
from stripe_bridge.billing.limits import UnknownCustomer, Window, window_start
from stripe_bridge.billing.tiers import DEFAULT_TIERS
from stripe_bridge.billing.usage_counter import count_key, usage_bucket, usage_buckets
from stripe_bridge.config import Settings
from stripe_bridge.ops.natsserver import NatsServer
from stripe_bridge_testing.waiting import wait_until_async

from ..conftest import FunctionFactory

METER = "api_calls"  # free tier (unknown customers): 100 a day


def _logic(url: str, **own: Any) -> Entitlements:
    settings = EntitlementSettings(**own)
    return Entitlements(DEFAULT_TIERS, Settings(nats_url=url), settings)


def _check(customer: str, quantity: float = 1, reserve: bool = False) -> CheckRequest:
    return CheckRequest(customer=customer, meter=METER, quantity=quantity, reserve=reserve)


def _total(collector: Any, **labels: str) -> float:
    return sum(
        float(s.value)
        for metric in collector.collect()
        for s in metric.samples
        if s.name.endswith("_total") and labels.items() <= s.labels.items()
    )


def _answers(logic: Entitlements, source: str) -> float:
    return _total(logic.watch_metrics.answers, source=source)


def _in_memory(logic: Entitlements, customer: str) -> bool:
    """Memory can answer for ``customer`` now (watched, caught up, current)."""
    start = window_start(Window.DAY, datetime.now(UTC))
    watched = logic.watched
    return watched is not None and watched.client.position(customer, METER, start) is not None


async def _served(logic: Entitlements, customer: str) -> None:
    """Check twice (KV; the second starts the watch) and wait until memory answers for
    ``customer``."""
    await logic.check(_check(customer))
    await logic.check(_check(customer))
    await wait_until_async(lambda: _in_memory(logic, customer), 15, f"{customer} watched")


async def _put_used(url: str, customer: str, used: float) -> None:
    import nats

    nc = await nats.connect(url)
    try:
        kv = (await usage_buckets(nc.jetstream()))[Window.DAY]
        key = count_key(customer, METER, Window.DAY, datetime.now(UTC))
        await kv.put(key, f'{{"used": {used}, "last_seq": 1}}'.encode())
    finally:
        await nc.close()


async def _remaining(logic: Entitlements, customer: str) -> float:
    return float((await logic.check(_check(customer)))["remaining"])


async def test_checks_are_answered_from_memory_and_follow_kv_writes(
    nats_server: NatsServer,
) -> None:
    logic = _logic(nats_server.url)
    try:
        await _served(logic, "cus_mem")
        assert _answers(logic, "kv") == 2  # both checks read KV; the second started the watch
        before = _answers(logic, "memory")
        await _put_used(nats_server.url, "cus_mem", 40)
        await wait_until_async(
            async_equals(lambda: _remaining(logic, "cus_mem"), 60),
            10,
            "the write reaches the memory's answer",
        )
        answer = await logic.check(_check("cus_mem", 61))
        assert (answer["allowed"], answer["used"], answer["remaining"]) == (False, 40, 60)
        assert answer["known"] is False and answer["degraded"] is False  # the shape as ever
        view = await logic.view("cus_mem")
        assert view["meters"][METER]["used"] == 40
        assert _answers(logic, "kv") == 2  # nothing more read KV
        assert _answers(logic, "memory") > before
    finally:
        await logic.close()


def async_equals(read: Any, expected: float) -> Any:
    """A predicate: ``await read()`` equals ``expected`` (not yet while NATS is down)."""

    async def equal() -> bool:
        try:
            return bool(await read() == expected)
        except NatsUnavailable:
            return False

    return equal


async def test_least_recently_answered_customers_are_forgotten_and_read_again(
    nats_server: NatsServer,
) -> None:
    logic = _logic(nats_server.url, watched_customers=2)
    try:
        await _served(logic, "cus_a")
        await _served(logic, "cus_b")
        await logic.check(_check("cus_a"))  # cus_b is now the least recently answered
        await _served(logic, "cus_c")
        assert logic.watched is not None
        served = set(logic.watched.client._customers)
        assert served == {"cus_a", "cus_c"}  # the bound, and which one went
        assert not _in_memory(logic, "cus_b")
        # What changed while cus_b was not watched is read from KV, then watched again.
        await _put_used(nats_server.url, "cus_b", 70)
        reads = _answers(logic, "kv")
        assert await _remaining(logic, "cus_b") == 30
        assert _answers(logic, "kv") == reads + 1
        assert await _remaining(logic, "cus_b") == 30  # its second answer: watched again
        await wait_until_async(lambda: _in_memory(logic, "cus_b"), 15, "cus_b watched again")
        assert set(logic.watched.client._customers) == {"cus_b", "cus_c"}
        assert len(logic.watched.client._customers) <= 2
    finally:
        await logic.close()


async def test_a_watch_that_ends_sends_checks_back_to_kv(nats_server: NatsServer) -> None:
    logic = _logic(nats_server.url)
    try:
        await _served(logic, "cus_w")
        assert logic.watched is not None
        state = logic.watched.client._customers["cus_w"]
        day = next(w for w in state.watches if "USAGE_DAY" in str(w.kv._stream))
        await day.watcher.stop()  # the day counts' watch ends (as a deleted consumer would)
        await wait_until_async(lambda: not _in_memory(logic, "cus_w"), 10, "no longer current")
        await _put_used(nats_server.url, "cus_w", 25)
        # Memory no longer hears of counts: the answer comes from KV, not the old memory.
        assert await _remaining(logic, "cus_w") == 75
        # ...and the customer is watched again, so memory answers and follows writes again.
        await wait_until_async(lambda: _in_memory(logic, "cus_w"), 15, "watched again")
        await _put_used(nats_server.url, "cus_w", 35)
        await wait_until_async(
            async_equals(lambda: _remaining(logic, "cus_w"), 65), 10, "memory follows again"
        )
        assert _total(logic.watch_metrics.failures) >= 1
    finally:
        await logic.close()


async def test_a_lost_connection_sends_checks_back_to_kv_until_watched_again(
    tmp_path: Path,
) -> None:
    server = NatsServer(tmp_path / "nats").start()
    logic = _logic(server.url, unavailable_after=1)
    try:
        await _served(logic, "cus_r")
        await _put_used(server.url, "cus_r", 10)
        await wait_until_async(
            async_equals(lambda: _remaining(logic, "cus_r"), 90), 10, "memory has 10 used"
        )
        server.stop()
        await wait_until_async(lambda: not _in_memory(logic, "cus_r"), 10, "memory stale")
        # Not memory's answer: KV is retried for unavailable_after, then the function answers
        # by the tier's rule (``degraded``), as before memory.
        with pytest.raises(NatsUnavailable):
            await logic.check(_check("cus_r"))
        server.start()
        # Written as soon as NATS is back, before the watches are necessarily restarted: the
        # next answer must not be memory's 90.
        await _put_used(server.url, "cus_r", 50)
        await wait_until_async(
            async_equals(lambda: _remaining(logic, "cus_r"), 50), 15, "KV's answer after restart"
        )
        await wait_until_async(lambda: _in_memory(logic, "cus_r"), 30, "watched again")
        assert await _remaining(logic, "cus_r") == 50
    finally:
        await logic.close()
        server.stop()


async def test_sixteen_racing_reservers_never_over_grant_beside_memory(
    nats_server: NatsServer,
) -> None:
    logic = _logic(nats_server.url)
    try:
        await _served(logic, "cus_race16")
        first = await logic.check(_check("cus_race16", 95, reserve=True))
        assert first["allowed"] and first["remaining"] == 5
        answers = await asyncio.gather(
            *(logic.check(_check("cus_race16", reserve=True)) for _ in range(16))
        )
        assert sum(a["allowed"] for a in answers) == 5
        # Memory hears of every hold: a non-reserving check answers nothing is left.
        await wait_until_async(
            async_equals(lambda: _remaining(logic, "cus_race16"), 0), 10, "holds in memory"
        )
        assert _in_memory(logic, "cus_race16")
        assert (await logic.check(_check("cus_race16")))["allowed"] is False
    finally:
        await logic.close()


async def test_the_function_counts_answers_by_source_and_logs_allowed_checks_quietly(
    nats_server: NatsServer, start_function: FunctionFactory
) -> None:
    fn = start_function("billing_entitlements", NATS_URL=nats_server.url)
    body = {"customer": "cus_fn", "meter": METER}
    async with httpx.AsyncClient(base_url=fn.url, timeout=10) as client:
        assert (await client.post("/v1/check", json=body)).status_code == 200

        async def from_memory() -> bool:
            await client.post("/v1/check", json=body)
            metrics = (await client.get("/metrics")).text
            return 'stripe_bridge_entitlement_answers_total{source="memory"}' in metrics

        await wait_until_async(from_memory, 15, "answers from memory")
        metrics = (await client.get("/metrics")).text
        refused = await client.post("/v1/check", json={"customer": "c", "meter": "x"})
    assert 'stripe_bridge_entitlement_answers_total{source="kv"}' in metrics
    assert "stripe_bridge_entitlement_watched_customers 1.0" in metrics
    assert refused.status_code == 422
    # No INFO line per answered check (DEBUG), one for the refusal.
    line = "status=422 outcome=unknown_meter"
    await wait_until_async(lambda: line in fn.log(), 10, "the refusal's line")
    assert "outcome=ok" not in fn.log()


async def test_unknown_customers_denied_by_the_tier_file_are_not_watched(
    nats_server: NatsServer,
) -> None:
    # With unknown_customer: deny the tier decides before any count is read (and a count
    # that cannot be read does not turn the answer into a degraded one); nor does an id
    # never projected take a place in memory from the customers who pay.
    config = DEFAULT_TIERS.model_copy(update={"unknown_customer": UnknownCustomer.DENY})
    logic = Entitlements(config, Settings(nats_url=nats_server.url), EntitlementSettings())
    try:
        for customer in ("cus_nobody", "cus_nobody", "cus_other"):
            answer = await logic.check(_check(customer))
            assert (answer["allowed"], answer["reason"]) == (False, "unknown_customer")
        with pytest.raises(Refusal) as refused:
            await logic.view("cus_nobody")
        assert refused.value.status == 404
        assert logic.watched is not None and not logic.watched.client._customers
    finally:
        await logic.close()


async def test_only_a_second_answer_within_the_window_buys_a_watch(
    nats_server: NatsServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Watches cost nats-server six consumers and their heartbeats each: one-off ids (a caller
    # trying random ids) never buy one, and remembering them stays bounded.
    logic = _logic(nats_server.url, watched_customers=2)
    try:
        for i in range(20):
            await logic.check(_check(f"cus_once{i}"))
        assert logic.watched is not None
        assert not logic.watched.client._customers and not logic.watched._starting
        assert len(logic.watched._seen) == 2 * watched.SEEN_PER_PLACE
        await logic.check(_check("cus_once19"))  # answered again within the window
        await wait_until_async(lambda: _in_memory(logic, "cus_once19"), 15, "watched")
        assert set(logic.watched.client._customers) == {"cus_once19"}
        # A second answer after the window is a first again.
        monkeypatch.setattr(watched, "ADMIT_WITHIN", 0.0)
        await logic.check(_check("cus_later"))
        await logic.check(_check("cus_later"))
        assert "cus_later" not in logic.watched._starting
        assert set(logic.watched.client._customers) == {"cus_once19"}
    finally:
        await logic.close()


async def test_a_connection_that_cannot_bind_the_buckets_is_closed(tmp_path: Path) -> None:
    # Connected, then refused on a bucket (here a USAGE bucket's stream that is no KV
    # bucket): the attempt's connection must not stay open beside the next attempt's.
    import nats

    server = NatsServer(tmp_path / "nats").start()
    logic = _logic(server.url, unavailable_after=1)  # retried that long, then refused

    def connections() -> int:
        url = f"http://127.0.0.1:{server.monitor_port}/connz"
        with urllib.request.urlopen(url, timeout=5) as answer:
            return int(json.load(answer)["num_connections"])

    try:
        nc = await nats.connect(server.url)
        try:
            bucket = usage_bucket(Window.DAY)
            await nc.jetstream().add_stream(name=f"KV_{bucket}", subjects=[f"$KV.{bucket}.>"])
        finally:
            await nc.close()
        with pytest.raises(NatsUnavailable):
            await logic.check(_check("cus_nobucket"))
        await wait_until_async(lambda: connections() == 0, 15, "the attempt's connection closed")
        assert logic.watched is None
    finally:
        await logic.close()
        server.stop()
