"""Helpers of the bridge tests: reading the stream back and the functions' /metrics."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from ..helpers import stream_messages


async def last_seq(nats_url: str, stream: str = "STRIPE") -> int:
    """The stream's last sequence number (0 when empty): a cheap "did anything land?"."""
    import nats

    nc = await nats.connect(nats_url)
    try:
        info = await nc.jetstream().stream_info(stream)
        last: int = info.state.last_seq
        return last
    finally:
        await nc.close()


async def stored_ids(nats_url: str) -> list[str]:
    """The ``Nats-Msg-Id`` of every stored message, in stream order (repeats kept)."""
    return [msg.headers["Nats-Msg-Id"] for msg in await stream_messages(nats_url)]


async def stored_message(nats_url: str, event_id: str) -> Any:
    """The one stream message stored for ``event_id``; fails if there is not exactly one."""
    found = [
        msg for msg in await stream_messages(nats_url) if msg.headers["Nats-Msg-Id"] == event_id
    ]
    assert len(found) == 1, f"{len(found)} messages for {event_id}"
    return found[0]


async def stored_event(nats_url: str, event_id: str) -> dict[str, Any]:
    """The CloudEvent of the one stream message stored for ``event_id``."""
    event: dict[str, Any] = json.loads((await stored_message(nats_url, event_id)).data)
    return event


def metric(base_url: str, name: str, **labels: str) -> float:
    """The value of sample ``name`` with ``labels`` on a function's /metrics (0 if absent)."""
    text = httpx.get(base_url + "metrics", timeout=5).text
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total


def cli(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    """Run ``stripe-bridge <args>`` to completion, capturing its output."""
    return subprocess.run(
        [sys.executable, "-m", "stripe_bridge.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def cli_process(*args: str, stdout: Path) -> subprocess.Popen[bytes]:
    """Start ``stripe-bridge <args>`` in the background, its output going to ``stdout``."""
    with stdout.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "stripe_bridge.cli", *args],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
