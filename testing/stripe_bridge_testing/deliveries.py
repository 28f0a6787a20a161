"""Stripe deliveries as the tests and the staging run send them: real fixtures, signed.

The fixtures are real Stripe events in tests/fixtures; reading the stream back checks
what the bridge stored.
"""

from __future__ import annotations

import copy
import json
import secrets
import time
from pathlib import Path
from typing import Any

import httpx
from stripe_bridge import registry
from stripe_bridge.signature import sign_header

from .repo import REPO_ROOT

FIXTURES = REPO_ROOT / "tests" / "fixtures"
SECRET = "whsec_test_" + "a" * 32


def fixture_event(name: str, fresh_id: bool = False) -> dict[str, Any]:
    """A real Stripe event from tests/fixtures (a copy; optionally with a new id)."""
    event: dict[str, Any] = json.loads((FIXTURES / f"{name}.json").read_text())
    if fresh_id:
        event = copy.deepcopy(event)
        event["id"] = "evt_" + secrets.token_hex(12)
    return event


def _first_fixture_of_each_type(fixtures: Path) -> dict[str, str]:
    served = {spec.name for spec in registry.EVENT_TYPES}
    first: dict[str, str] = {}
    for path in sorted(fixtures.glob("*.json")):
        event_type = json.loads(path.read_text())["type"]
        if event_type in served:
            first.setdefault(event_type, path.stem)
    return first


#: One real payload per registered type: the first fixture (by name) of that type.
FIXTURE_OF = _first_fixture_of_each_type(FIXTURES)


def now() -> int:
    """The current Unix time, whole seconds: a delivery's timestamp, an event's ``created``."""
    return int(time.time())


def signed_headers(
    body: bytes, secret: str = SECRET, timestamp: int | None = None
) -> dict[str, str]:
    """Headers of a genuine Stripe delivery of ``body``."""
    return {
        "Content-Type": "application/json",
        "Stripe-Signature": sign_header(secret.encode(), body, timestamp),
    }


def post_event(
    url: str, event: dict[str, Any], secret: str = SECRET, timeout: float = 30.0
) -> httpx.Response:
    """POST ``event`` signed with ``secret`` to ``url``."""
    body = json.dumps(event).encode()
    return httpx.post(url, content=body, headers=signed_headers(body, secret), timeout=timeout)


async def stream_messages(nats_url: str, stream: str = "STRIPE") -> list[Any]:
    """Every message stored in ``stream``, in order (read by sequence, no consumer)."""
    import nats

    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        info = await js.stream_info(stream)
        out = []
        for seq in range(info.state.first_seq, info.state.last_seq + 1):
            if info.state.messages == 0:
                break
            out.append(await js.get_msg(stream, seq))
        return out
    finally:
        await nc.close()


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
