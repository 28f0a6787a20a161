"""Faults not tried before: a stalled or emptied Redis, JetStream out of storage, clock skew.

Real servers only: redis-server is frozen with SIGSTOP (a stall, not a refusal) or
restarted without its data; nats-server runs with a tiny ``max_file_store``.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import threading
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest
from stripe_bridge.ops.natsserver import NatsServer
from stripe_bridge_testing.deliveries import (
    SECRET,
    fixture_event,
    now,
    post_event,
    signed_headers,
    stored_ids,
)
from stripe_bridge_testing.function_metrics import metric
from stripe_bridge_testing.processes import FunctionProcess, RedisServer
from stripe_bridge_testing.waiting import wait_until

from ..conftest import FunctionFactory, provision_stream
from ..nats_cluster.test_failover import redeliver_until_stored
from .test_http_contract import OTHER_SECRET, fresh_invoice, new_log, redis_cli


def redis_function(
    start_function: FunctionFactory, nats: NatsServer, redis: RedisServer
) -> FunctionProcess:
    return start_function(
        "invoice_paid", NATS_URL=nats.url, IDEMPOTENCY_BACKEND="redis", REDIS_URL=redis.url
    )


async def test_a_claim_that_timed_out_leaves_no_lease(
    stream: NatsServer, redis_server: RedisServer, start_function: FunctionFactory
) -> None:
    fn = redis_function(start_function, stream, redis_server)
    assert post_event(fn.url, fresh_invoice()).json()["status"] == "published"
    event = fresh_invoice()
    assert redis_server.process is not None
    os.kill(redis_server.process.pid, signal.SIGSTOP)
    try:
        stalled = post_event(fn.url, event, timeout=10)
    finally:
        os.kill(redis_server.process.pid, signal.SIGCONT)
    assert stalled.status_code == 503
    assert stalled.json()["error"] == "idempotency_unavailable"
    # The answer said "not claimed": Stripe's retry must not be held off for the lease
    # (30 s) by the SET NX PX that Redis ran once it resumed.
    answers: list[int] = []

    def stored() -> bool:
        answers.append(post_event(fn.url, event).status_code)
        return answers[-1] == 200

    wait_until(stored, 30, "the retry stored")
    assert set(answers) <= {409, 200}
    key = f"stripe-bridge:STRIPE:event:{event['id']}"
    assert redis_cli(redis_server, "GET", key) == "done"
    assert (await stored_ids(stream.url)).count(event["id"]) == 1


async def test_redis_restarted_empty_while_claims_are_in_flight(
    stream: NatsServer, redis_server: RedisServer, start_function: FunctionFactory
) -> None:
    fn = redis_function(start_function, stream, redis_server)
    events = [fresh_invoice() for _ in range(120)]
    answers: dict[str, int] = {}
    lock = threading.Lock()

    def send(batch: list[dict[str, Any]]) -> None:
        for event in batch:
            status = post_event(fn.url, event).status_code
            with lock:
                answers[event["id"]] = status

    senders = [threading.Thread(target=send, args=(events[i::4],)) for i in range(4)]
    for sender in senders:
        sender.start()
    wait_until(lambda: len(answers) >= 30, 30, "30 answers before the restart")
    redis_server.stop()  # its claims and done marks are gone with it
    redis_server.start()
    for sender in senders:
        sender.join(60)
    assert set(answers.values()) <= {200, 409, 503}, Counter(answers.values())
    # Stripe redelivers every event, also the stored ones whose done mark was lost:
    # JetStream's duplicate window (Nats-Msg-Id) answers those.
    for event in events:
        redeliver_until_stored(fn.url, event)
    ids = Counter(await stored_ids(stream.url))
    assert all(ids[event["id"]] == 1 for event in events)
    assert metric(fn.url, "stripe_bridge_webhooks_total", outcome="duplicate") >= 1


def write_conf(folder: Path, max_file_store: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    conf = folder / "nats.conf"
    store = folder / "jetstream"
    conf.write_text(f'jetstream {{ store_dir: "{store}", max_file_store: {max_file_store} }}\n')
    return conf


async def fill(url: str) -> int:
    """Fill the server's file storage with another stream's messages; how many fit."""
    from nats.js.api import StreamConfig

    import nats

    nc = await nats.connect(url)
    try:
        js = nc.jetstream(timeout=5)
        await js.add_stream(StreamConfig(name="FILLER", subjects=["filler.>"]))
        count = 0
        while True:
            try:
                await js.publish("filler.x", b"x" * 16384)
            except nats.js.errors.APIError:
                return count
            count += 1
    finally:
        await nc.close()


async def delete_filler(url: str) -> None:
    import nats

    nc = await nats.connect(url)
    try:
        await nc.jetstream().delete_stream("FILLER")
    finally:
        await nc.close()


def test_storage_full_gets_503_storage_full_and_recovers(
    tmp_path: Path, start_function: FunctionFactory
) -> None:
    folder = tmp_path / "small-nats"
    with NatsServer(folder / "jetstream", config_file=write_conf(folder, "2MB")) as server:
        provision_stream(server.url)
        fn = start_function("invoice_paid", NATS_URL=server.url)
        assert post_event(fn.url, fresh_invoice()).json()["status"] == "published"
        assert asyncio.run(fill(server.url)) > 10
        event = fresh_invoice()
        body = json.dumps(event).encode()
        headers = signed_headers(body)
        log_at = len(fn.log())
        full = httpx.post(fn.url, content=body, headers=headers, timeout=10)
        assert full.status_code == 503, full.text
        assert full.json() == {"error": "storage_full"}
        assert int(full.headers["Retry-After"]) > 0
        assert metric(fn.url, "stripe_bridge_publish_failures_total", reason="storage_full") == 1
        assert "status=503 outcome=failed reason=storage_full" in new_log(fn, log_at)
        assert httpx.get(fn.url + "readyz", timeout=10).status_code == 200  # NATS is fine
        # Space returns (another stream deleted): Stripe's retry of the delivery is stored.
        asyncio.run(delete_filler(server.url))
        again = httpx.post(fn.url, content=body, headers=headers, timeout=10)
        assert again.status_code == 200, again.text
        assert again.json()["status"] == "published"
        assert asyncio.run(stored_ids(server.url)).count(event["id"]) == 1


@pytest.mark.parametrize("skew", [-600, 600])
def test_a_clock_ten_minutes_off_refuses_and_shows_the_skew(
    shared_stream: NatsServer, invoice_paid_fn: FunctionProcess, skew: int
) -> None:
    # Stripe signs with its clock; a function whose clock is 10 min ahead sees every
    # signature 10 min old (skew -600), one 10 min behind sees them from the future.
    fn = invoice_paid_fn
    gauge = "stripe_bridge_signature_clock_skew_seconds"
    body = json.dumps(fresh_invoice()).encode()
    answer = httpx.post(fn.url, content=body, headers=signed_headers(body, SECRET, now() + skew))
    assert answer.status_code == 400
    assert answer.json()["error"] == ("timestamp_too_old" if skew < 0 else "timestamp_in_future")
    assert abs(metric(fn.url, gauge) - (-skew)) < 30
    # A forged signature (unknown secret) must not move the gauge: only Stripe's does.
    forged = httpx.post(
        fn.url, content=body, headers=signed_headers(body, OTHER_SECRET, now() + 5 * skew)
    )
    assert forged.status_code == 400
    assert abs(metric(fn.url, gauge) - (-skew)) < 30
    # A genuine delivery on time brings it back near 0.
    assert post_event(fn.url, fixture_event("invoice_paid", fresh_id=True)).status_code == 200
    assert abs(metric(fn.url, gauge)) < 30
