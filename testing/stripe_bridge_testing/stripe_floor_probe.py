"""Checkout, portal and replay's Stripe calls, run by tests/billing/test_stripe_floor.py
(``python -m stripe_bridge_testing.stripe_floor_probe``) in a child process.

The child's ``stripe`` is the version under test (an exact pin on ``PYTHONPATH``, ahead of
the locked one); everything else is the project's environment. Arguments: the stand-in's
URL, its API key, and an event id to list after and fetch. Prints one JSON object.
"""

from __future__ import annotations

import asyncio
import json
import sys
from datetime import UTC, datetime
from typing import Any

import stripe
from stripe_bridge.billing.checkout import (
    CheckoutRequest,
    PortalRequest,
    StripeSettings,
    create_checkout_session,
    create_portal_session,
    stripe_client,
)
from stripe_bridge.billing.tiers import TierConfig
from stripe_bridge.ops.replay import EventQuery, fetch_event, fetch_events


async def sessions(settings: StripeSettings) -> list[str]:
    """A checkout and a portal session's URLs."""
    client = stripe_client(settings)
    request = CheckoutRequest(customer_id="cus_Abc123", tier="pro")
    checkout = await create_checkout_session(client, TierConfig.load(None), settings, request)
    portal = await create_portal_session(client, settings, PortalRequest(customer_id="cus_Abc"))
    return [checkout.url, portal.url]


def main(base: str, key: str, event_id: str) -> dict[str, Any]:
    """What each call returned, by name."""
    settings = StripeSettings(
        stripe_api_key=key,
        stripe_api_base=base,
        stripe_max_network_retries=0,
        checkout_success_url="https://app.example/welcome",
    )
    since = EventQuery(since=datetime(2000, 1, 1, tzinfo=UTC), types=("invoice.paid",))
    return {
        "stripe": stripe.VERSION,
        "sessions": asyncio.run(sessions(settings)),
        "since": [e["id"] for e in fetch_events(key, base, EventQuery(since=since.since))],
        "types": [e["id"] for e in fetch_events(key, base, since)],
        "after": [e["id"] for e in fetch_events(key, base, EventQuery(after=event_id))],
        "event": fetch_event(key, base, event_id)["id"],
    }


if __name__ == "__main__":
    print(json.dumps(main(*sys.argv[1:4])))
