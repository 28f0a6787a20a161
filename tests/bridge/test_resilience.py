"""Dependencies that come late, stall, or leave: the bridge answers 503 and loses nothing.

nats-server is paused with SIGSTOP to stand for a server (or network) that accepts a
publish but answers too late: the real process, frozen, not a mock.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from stripe_bridge.config import load_settings
from stripe_bridge.jetstream import JetStreamPublisher, PublishError
from stripe_bridge.ops.natsserver import NatsServer, free_port
from stripe_bridge.reasons import Reason
from stripe_bridge_testing.deliveries import fixture_event, post_event, signed_headers, stored_ids
from stripe_bridge_testing.function_metrics import metric
from stripe_bridge_testing.processes import FunctionProcess
from stripe_bridge_testing.waiting import wait_until

from ..conftest import FunctionFactory, provision_stream


@contextmanager
def paused(server: NatsServer) -> Iterator[None]:
    """nats-server frozen (SIGSTOP) inside the block, and always thawed after it."""
    assert server.process is not None
    pid = server.process.pid
    os.kill(pid, signal.SIGSTOP)
    try:
        # kill() returns before every thread of the Go runtime has actually stopped.
        wait_until(lambda: process_state(pid) == "T", 30, "nats-server stopped")
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


def process_state(pid: int) -> str:
    """The one-letter state of process ``pid`` (``T``: stopped by a signal)."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]


def connections(server: NatsServer) -> list[dict[str, object]]:
    """The server's client connections, from its monitoring endpoint."""
    url = f"http://127.0.0.1:{server.monitor_port}/connz"
    found: list[dict[str, object]] = httpx.get(url, timeout=5).json()["connections"] or []
    return found


def ready(fn: FunctionProcess) -> bool:
    return httpx.get(fn.url + "readyz", timeout=10).status_code == 200


def test_cold_start_before_nats_then_one_reused_connection(
    tmp_path: Path, start_function: FunctionFactory
) -> None:
    port = free_port()
    fn = start_function("invoice_paid", NATS_URL=f"nats://127.0.0.1:{port}")
    assert not ready(fn)
    early = post_event(fn.url, fixture_event("invoice_paid", fresh_id=True), timeout=10)
    assert early.status_code == 503  # within the timeout: the first connect is bounded
    assert early.json() == {"error": "nats_unavailable"}
    assert int(early.headers["Retry-After"]) > 0

    server = NatsServer(tmp_path / "late-nats", port=port)
    server.start()
    try:
        provision_stream(server.url)
        wait_until(lambda: ready(fn), 60, "ready once NATS is up")
        events = [fixture_event("invoice_paid", fresh_id=True) for _ in range(5)]
        for event in events:
            assert post_event(fn.url, event).json()["status"] == "published"
        assert asyncio.run(stored_ids(server.url)) == [event["id"] for event in events]
        # One connection per process, opened once and reused by every delivery.
        (connection,) = connections(server)
        assert connection["name"] == "stripe-bridge/invoice_paid"
    finally:
        server.stop()


async def test_a_lost_puback_is_caught_by_the_duplicate_window(
    stream: NatsServer, start_function: FunctionFactory
) -> None:
    fn = start_function("invoice_paid", NATS_URL=stream.url, PUBLISH_TIMEOUT="1")
    assert post_event(fn.url, fixture_event("invoice_paid", fresh_id=True)).status_code == 200
    event = fixture_event("invoice_paid", fresh_id=True)
    body = json.dumps(event).encode()
    headers = signed_headers(body)
    with paused(stream):
        stalled = httpx.post(fn.url, content=body, headers=headers, timeout=10)
    assert stalled.status_code == 503
    assert stalled.json() == {"error": "puback_timeout"}
    assert metric(fn.url, "stripe_bridge_publish_failures_total", reason="puback_timeout") == 1
    # The frozen server had the message in its socket: thawed, it stores it after all.
    # The bridge cannot know that, so it must not have marked the event done...
    wait_until(lambda: ready(fn), 60, "thawed")
    retried = httpx.post(fn.url, content=body, headers=headers, timeout=10)
    assert retried.status_code == 200, retried.text
    # ...and JetStream's duplicate window (Nats-Msg-Id) keeps the retry from a second copy.
    assert retried.json()["status"] == "duplicate"
    assert (await stored_ids(stream.url)).count(event["id"]) == 1


async def test_sigterm_lets_the_inflight_delivery_finish(
    stream: NatsServer, start_function: FunctionFactory
) -> None:
    fn = start_function("invoice_paid", NATS_URL=stream.url, PUBLISH_TIMEOUT="15")
    assert post_event(fn.url, fixture_event("invoice_paid", fresh_id=True)).status_code == 200
    event = fixture_event("invoice_paid", fresh_id=True)
    answers: list[httpx.Response] = []

    def deliver() -> None:
        answers.append(post_event(fn.url, event, timeout=30))

    with paused(stream):
        sender = threading.Thread(target=deliver)
        sender.start()
        wait_until(lambda: metric(fn.url, "stripe_bridge_inflight_requests") == 1, 30, "in flight")
        assert fn.process is not None
        fn.process.send_signal(signal.SIGTERM)  # Knative scaling to zero

        def refusing() -> bool:
            try:
                httpx.get(fn.url + "healthz", timeout=1)
            except httpx.ConnectError:
                return True
            return False

        wait_until(refusing, 30, "function stopped accepting connections")
    sender.join(30)
    assert [a.status_code for a in answers] == [200]
    assert answers[0].json()["status"] == "published"
    fn.process.wait(30)
    assert (await stored_ids(stream.url)).count(event["id"]) == 1
    assert "Traceback" not in fn.log()


async def test_a_burst_while_nats_is_down_costs_one_connect_attempt(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Without sharing the failure, each queued request made its own full connect attempt
    # in turn: the 40th waited ~20 s, past what Stripe waits for an answer.
    publisher = JetStreamPublisher(load_settings(nats_url=f"nats://127.0.0.1:{free_port()}"))
    caplog.set_level(logging.WARNING, logger="stripe_bridge.jetstream")

    async def deliver() -> Reason:
        try:
            await publisher.publish("stripe.test.invoice.paid", b"{}", {})
        except PublishError as exc:
            return exc.reason
        raise AssertionError("published with NATS down")

    failures = await asyncio.gather(*(deliver() for _ in range(40)))
    assert failures == [Reason.NATS_UNAVAILABLE] * 40
    attempts = [r for r in caplog.records if r.getMessage().startswith("nats error")]
    assert 1 <= len(attempts) <= 2  # one attempt: each server tried at most twice
