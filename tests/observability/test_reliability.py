"""A Pushgateway that is down or never answers must not delay or fail any webhook."""

from __future__ import annotations

import signal
import socket
import threading
import time
from collections.abc import Iterator

import pytest
from stripe_bridge.natsserver import NatsServer, free_port
from stripe_bridge.processes import wait_until
from stripe_bridge.push import PUSH_TIMEOUT_SECONDS

from ..conftest import FunctionFactory
from ..helpers import fixture_event, post_event

DELIVERIES = 12
#: uvicorn re-raises SIGTERM after its graceful shutdown, so the exit status is -SIGTERM.
GRACEFUL = (0, -signal.SIGTERM)


class BlackHole:
    """A TCP server that accepts connections and never answers (a hung Pushgateway)."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.1)
        self.port: int = self.sock.getsockname()[1]
        self.accepted: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            self.accepted.append(conn)

    def __enter__(self) -> BlackHole:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        for conn in self.accepted:
            conn.close()
        self.sock.close()


@pytest.fixture
def black_hole() -> Iterator[BlackHole]:
    """A listening socket that never answers."""
    with BlackHole() as server:
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
    # A webhook that waited for even one push attempt would take the whole timeout.
    assert max(latencies) < PUSH_TIMEOUT_SECONDS / 2
    wait_until(lambda: "metrics push failed reason=unreachable" in fn.log(), 10, "failure log")
    failures = fn.log().count("metrics push failed")
    assert fn.stop() in GRACEFUL
    assert fn.log().count("metrics push failed") > failures, "no final push on SIGTERM"


def test_pushgateway_never_answers(
    stream: NatsServer, start_function: FunctionFactory, black_hole: BlackHole
) -> None:
    fn = start_function(
        "invoice_paid",
        NATS_URL=stream.url,
        PUSHGATEWAY_URL=f"http://127.0.0.1:{black_hole.port}",
        PUSHGATEWAY_MIN_INTERVAL="0",
    )
    latencies = deliver(fn.url)
    report("pushgateway hung", latencies)
    assert max(latencies) < PUSH_TIMEOUT_SECONDS / 2
    assert black_hole.accepted, "the function never tried to push"
    wait_until(lambda: "metrics push failed reason=timeout" in fn.log(), 10, "timeout log")
    # SIGTERM waits for at most the running push and the final one, then exits cleanly.
    started = time.monotonic()
    assert fn.stop() in GRACEFUL
    assert time.monotonic() - started < 3 * PUSH_TIMEOUT_SECONDS + 5
