"""Fixtures of the billing tests: the USAGE streams, an OpenMeter stand-in, a forwarder."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from stripe_bridge.billing.ingest_standin import IngestStandIn
from stripe_bridge.billing.openmeter import Forwarder, ForwarderSettings
from stripe_bridge.billing.usage import (
    UsageRecord,
    encode,
    provision_usage_streams,
)
from stripe_bridge.natsserver import NatsServer

API_KEY = "om_test_key"


@pytest.fixture
def ingest() -> Iterator[IngestStandIn]:
    """The OpenMeter ingest stand-in on a free loopback port."""
    with IngestStandIn(API_KEY) as server:
        yield server


@pytest.fixture
async def usage_nats(nats_server: NatsServer) -> NatsServer:
    """``nats_server`` with the USAGE and USAGE_DLQ streams."""
    import nats

    nc = await nats.connect(nats_server.url)
    try:
        await provision_usage_streams(nc.jetstream())
    finally:
        await nc.close()
    return nats_server


def records(count: int, meter: str = "tokens", prefix: str = "u") -> list[UsageRecord]:
    """``count`` distinct usage records for two customers."""
    return [
        UsageRecord(meter=meter, customer_id=f"cus_{i % 2}", value=i, id=f"{prefix}-{i:05d}")
        for i in range(count)
    ]


async def publish(url: str, items: list[UsageRecord]) -> None:
    """Publish usage records to the USAGE stream (waiting for each PubAck)."""
    import nats

    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        for record in items:
            subject, body, headers = encode(record)
            await js.publish(subject, body, headers=headers)
    finally:
        await nc.close()


def forwarder_settings(ingest: IngestStandIn, **overrides: Any) -> ForwarderSettings:
    """Fast settings for tests: small batches, short backoff, short breaker timeout."""
    base: dict[str, Any] = {
        "url": ingest.url,
        "api_key": ingest.api_key,
        "batch_size": 10,
        "fetch_wait": 0.2,
        "backoff_base": 0.05,
        "backoff_max": 0.2,
        "breaker_failures": 3,
        "breaker_reset": 1.0,
        "max_requests_per_second": 1000,
        "ack_wait": 2.0,
    }
    return ForwarderSettings(**{**base, **overrides})


async def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll ``predicate`` on the event loop until true; TimeoutError after ``timeout`` s."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise TimeoutError(f"{what} not true after {timeout}s")
        await asyncio.sleep(0.02)


@asynccontextmanager
async def running_forwarder(url: str, settings: ForwarderSettings) -> AsyncIterator[Forwarder]:
    """A Forwarder running in this event loop; stopped (and its errors raised) on exit."""
    import nats

    nc = await nats.connect(url)
    forwarder = Forwarder(nc, settings)
    stop = asyncio.Event()
    task = asyncio.create_task(forwarder.run(stop))
    try:
        yield forwarder
    finally:
        stop.set()
        try:
            await asyncio.wait_for(task, 10)
        finally:
            await nc.close()
