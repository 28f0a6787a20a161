"""A Pushgateway that is down or never answers must not delay or fail any webhook."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator

import pytest
from stripe_bridge.ops.natsserver import NatsServer, free_port
from stripe_bridge.push import PUSH_TIMEOUT_SECONDS
from stripe_bridge_testing.deliveries import fixture_event, post_event
from stripe_bridge_testing.processes import BlackHoleServer
from stripe_bridge_testing.waiting import wait_until

from ..conftest import FunctionFactory

DELIVERIES = 12
#: uvicorn re-raises SIGTERM after its graceful shutdown, so the exit status is -SIGTERM.
GRACEFUL = (0, -signal.SIGTERM)


@pytest.fixture
def black_hole() -> Iterator[BlackHoleServer]:
    """A listening socket that never answers."""
    with BlackHoleServer() as server:
        yield server


def deliver(url: str) -> list[float]:
    """Post DELIVERIES fresh events; assert each is stored; return each answer's seconds."""
    latencies = []
    for _ in range(DELIVERIES):
        started = time.perf_counter()
        response = post_event(url, fixture_event("invoice_paid", fresh_id=True))
        latencies.append(time.perf_counter() - started)
        assert response.status_code == 200, response.text
        assert response.json()["status"] == "published"
    return latencies


def report(what: str, latencies: list[float]) -> None:
    print(
        f"\n{what}: {len(latencies)} webhooks, max {max(latencies) * 1000:.1f} ms, "
        f"push timeout {PUSH_TIMEOUT_SECONDS * 1000:.0f} ms"
    )


def test_pushgateway_down(stream: NatsServer, start_function: FunctionFactory) -> None:
    fn = start_function(
        "invoice_paid",
        NATS_URL=stream.url,
        PUSHGATEWAY_URL=f"http://127.0.0.1:{free_port()}",
        PUSHGATEWAY_MIN_INTERVAL="0",
    )
    latencies = deliver(fn.url)
    report("pushgateway down", latencies)
    # A webhook that waited for even one push attempt would take the whole timeout (a
    # tighter bound failed on a loaded machine: one webhook took 1.02 s, none waited).
    assert max(latencies) < PUSH_TIMEOUT_SECONDS
    wait_until(lambda: "metrics push failed reason=unreachable" in fn.log(), 30, "failure log")
    failures = fn.log().count("metrics push failed")
    assert fn.stop() in GRACEFUL
    assert fn.log().count("metrics push failed") > failures, "no final push on SIGTERM"


def test_pushgateway_never_answers(
    stream: NatsServer, start_function: FunctionFactory, black_hole: BlackHoleServer
) -> None:
    fn = start_function(
        "invoice_paid",
        NATS_URL=stream.url,
        PUSHGATEWAY_URL=black_hole.url,
        PUSHGATEWAY_MIN_INTERVAL="0",
    )
    latencies = deliver(fn.url)
    report("pushgateway hung", latencies)
    assert max(latencies) < PUSH_TIMEOUT_SECONDS
    assert black_hole.accepted, "the function never tried to push"
    wait_until(lambda: "metrics push failed reason=timeout" in fn.log(), 30, "timeout log")
    # SIGTERM waits for at most the running push and the final one, then exits cleanly.
    started = time.monotonic()
    assert fn.stop() in GRACEFUL
    assert time.monotonic() - started < 3 * PUSH_TIMEOUT_SECONDS + 5
