"""Exactly once under pressure: concurrent redeliveries, and a NATS outage mid-run."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from itertools import cycle

import httpx
from stripe_bridge.ops.natsserver import NatsServer
from stripe_bridge_testing.deliveries import fixture_event, signed_headers, stored_ids
from stripe_bridge_testing.processes import FunctionProcess, RedisServer
from stripe_bridge_testing.waiting import wait_until

from ..conftest import FunctionFactory

DELIVERIES = 50


async def test_concurrent_deliveries_across_two_processes_store_one_message(
    stream: NatsServer, redis_server: RedisServer, start_function: FunctionFactory
) -> None:
    env = {"NATS_URL": stream.url, "IDEMPOTENCY_BACKEND": "redis", "REDIS_URL": redis_server.url}
    functions = [start_function("invoice_paid", **env), start_function("invoice_paid", **env)]
    event = fixture_event("invoice_paid", fresh_id=True)
    body = json.dumps(event).encode()
    urls = cycle(fn.url for fn in functions)

    async with httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=100)) as client:
        # Each delivery is signed on its own, as Stripe's retries are.
        requests = [
            client.post(next(urls), content=body, headers=signed_headers(body))
            for _ in range(DELIVERIES)
        ]
        responses = await asyncio.gather(*requests)
        # Once stored, every process knows it through the shared store.
        later = [
            await client.post(fn.url, content=body, headers=signed_headers(body))
            for fn in functions
        ]

    outcomes = Counter(
        r.json()["status"] if r.status_code == 200 else f"{r.status_code} {r.json()['error']}"
        for r in responses
    )
    assert set(outcomes) <= {"published", "duplicate", "409 in_progress"}, outcomes
    assert outcomes["published"] == 1, outcomes
    assert sum(outcomes.values()) == DELIVERIES
    assert [r.json()["status"] for r in later] == ["duplicate", "duplicate"]
    assert await stored_ids(stream.url) == [event["id"]]


async def test_concurrent_deliveries_to_one_process_with_the_memory_store(
    shared_stream: NatsServer, catch_all: FunctionProcess
) -> None:
    event = fixture_event("subscription_updated_basil", fresh_id=True)
    body = json.dumps(event).encode()
    async with httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=100)) as client:
        responses = await asyncio.gather(
            *(
                client.post(catch_all.url, content=body, headers=signed_headers(body))
                for _ in range(DELIVERIES)
            )
        )
    statuses = Counter(r.json().get("status") or r.json()["error"] for r in responses)
    assert set(statuses) <= {"published", "duplicate", "in_progress"}, statuses
    assert statuses["published"] == 1, statuses
    assert (await stored_ids(shared_stream.url)).count(event["id"]) == 1


EVENTS = 60
STOP_AT, RESTART_AT = 20, 40


async def test_nats_outage_mid_run_loses_nothing_and_stores_nothing_twice(
    stream: NatsServer, start_function: FunctionFactory
) -> None:
    fn = start_function("stripe_event", NATS_URL=stream.url)
    names = cycle(["invoice_paid", "subscription_updated_basil", "charge_succeeded"])
    events = [fixture_event(next(names), fresh_id=True) for _ in range(EVENTS)]
    deliveries = []
    for event in events:
        body = json.dumps(event).encode()
        deliveries.append((body, signed_headers(body)))

    statuses: list[int] = []
    with httpx.Client(timeout=30) as client:
        for index, (body, headers) in enumerate(deliveries):
            if index == STOP_AT:
                stream.stop()
            if index == RESTART_AT:
                stream.start()  # same port and store dir; the client reconnects by itself
            statuses.append(client.post(fn.url, content=body, headers=headers).status_code)

        assert statuses[:STOP_AT] == [200] * STOP_AT
        assert statuses[STOP_AT:RESTART_AT] == [503] * (RESTART_AT - STOP_AT)
        assert set(statuses[RESTART_AT:]) <= {200, 503}

        # Stripe retries every delivery that did not get a 2xx.
        wait_until(lambda: client.get(fn.url + "readyz").status_code == 200, 60, "reconnect")
        failed = [index for index, status in enumerate(statuses) if status != 200]
        for index in failed:
            body, headers = deliveries[index]
            retried = client.post(fn.url, content=body, headers=headers)
            assert retried.status_code == 200, retried.text

    stored = await stored_ids(stream.url)
    assert Counter(stored) == Counter(event["id"] for event in events)
