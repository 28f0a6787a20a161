"""Realistic sample events (real Stripe payloads) for ``stripe-bridge send`` and the benchmarks."""

from __future__ import annotations

import json
import secrets
import time
from importlib import resources
from typing import Any


def sample_event(event_type: str, fresh: bool = True) -> dict[str, Any]:
    """A Stripe event of ``event_type``: a stored real payload, or a minimal one for others.

    With ``fresh`` the event gets a new id and the current time, like ``stripe trigger``.
    """
    path = (
        resources.files("stripe_bridge.ops") / "samples" / (event_type.replace(".", "_") + ".json")
    )
    if path.is_file():
        event: dict[str, Any] = json.loads(path.read_text())
    else:
        resource = event_type.rsplit(".", 1)[0]
        event = {
            "object": "event",
            "api_version": "2025-03-31.basil",
            "livemode": False,
            "type": event_type,
            "data": {"object": {"id": f"{resource.split('.')[-1][:4]}_sample", "object": resource}},
            "request": {"id": None, "idempotency_key": None},
            "pending_webhooks": 1,
        }
    if fresh or "id" not in event:
        event["id"] = "evt_" + secrets.token_hex(12)
        event["created"] = int(time.time())
    return event
