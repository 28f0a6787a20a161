"""Fixtures of the billing tests: the USAGE streams, an OpenMeter stand-in, forwarders."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from stripe_bridge.billing.openmeter import Forwarder, ForwarderSettings
from stripe_bridge.billing.usage import (
    UsageRecord,
    encode,
    provision_usage_streams,
)
from stripe_bridge.ops.natsserver import NatsServer
from stripe_bridge_testing.consumer_processes import ForwarderProcess
from stripe_bridge_testing.openmeter_standin import IngestStandIn

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


@pytest.fixture
def start_forwarder(tmp_path: Path) -> Iterator[Callable[..., ForwarderProcess]]:
    """Start forwarder processes; all are stopped at teardown."""
    started: list[ForwarderProcess] = []

    def start(nats_url: str, ingest: IngestStandIn, **env: str) -> ForwarderProcess:
        process = ForwarderProcess(nats_url, ingest, tmp_path / "forwarders", **env)
        started.append(process)
        return process.start()

    try:
        yield start
    finally:
        for process in started:
            process.stop()
