"""Reading a stream (show, export, import's skip list, redrive) on a real nats-server: a
reader that stops early deletes its consumer at once, while still connected."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from typing import Any

from stripe_bridge.envelope import StripeEvent
from stripe_bridge.message import build_message
from stripe_bridge.ops.backup import iter_stream
from stripe_bridge.ops.natsserver import NatsServer

from ..billing.sequences import lifecycle


async def publish_events(url: str) -> list[str]:
    """Store the billing lifecycle events as the bridge does; their ids, in order."""
    import nats

    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        for raw in lifecycle():
            message = build_message(StripeEvent.model_validate(raw), raw, "stripe")
            await js.publish(message.subject, message.body, headers=message.headers)
    finally:
        await nc.close()
    return [raw["id"] for raw in lifecycle()]


async def consumers(url: str, stream: str = "STRIPE") -> list[Any]:
    """The consumers ``stream`` has now."""
    import nats

    nc = await nats.connect(url)
    try:
        return list(await nc.jetstream().consumers_info(stream))
    finally:
        await nc.close()


async def test_show_prints_no_traceback_and_leaves_no_consumer(stream: NatsServer) -> None:
    first, *_ = await publish_events(stream.url)
    shown = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "stripe_bridge.cli", "show", "--nats-url", stream.url, first],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert shown.returncode == 0, shown.stderr
    assert f"{first}: stream STRIPE seq 1" in shown.stdout
    # Returning from inside the loop used to leave the reader to the garbage collector,
    # which closed it after the connection: "Task exception was never retrieved".
    assert shown.stderr == ""
    assert await consumers(stream.url) == []


async def test_a_reader_left_early_deletes_its_consumer(stream: NatsServer) -> None:
    import nats

    await publish_events(stream.url)
    nc = await nats.connect(stream.url)
    try:
        async with iter_stream(nc.jetstream(), "STRIPE") as messages:
            async for _msg in messages:
                assert len(await consumers(stream.url)) == 1
                break
        assert await consumers(stream.url) == []
    finally:
        await nc.close()
