"""What Stripe sends once a customer pays a Checkout Session: the events and their delivery.

Paying is not an API call (the customer pays on Stripe's hosted page), so the Stripe
stand-in does it (``StripeStandIn.complete_checkout``). Stripe then creates the subscription
and sends ``customer.subscription.created``, and ``checkout.session.completed`` a second or
more after it (the order ``stripe_bridge.billing.tiers.Version.key`` documents). The payloads
are the real ones of ``stripe-bridge send`` (``stripe_bridge.ops.samples``) with the
session's customer, price and metadata, as a session created in subscription mode with
``metadata[tier]`` and ``subscription_data[metadata][tier]`` (billing_checkout) would give.

Each delivery is a POST of the event's JSON with the ``Stripe-Signature`` header
``t=<unix time>,v1=<hex HMAC-SHA256 of "<t>.<body>" under the endpoint secret>``
(docs.stripe.com/webhooks#verify-manually). Each is sent once: Stripe retries a failed
delivery for up to three days, the stand-in does not, and returns the answer for the test
to assert on.
"""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import dataclass
from typing import Any

import httpx
from stripe_bridge.ops.samples import sample_event
from stripe_bridge.signature import sign_header


@dataclass(frozen=True)
class Delivery:
    """One webhook delivery: the event, the endpoint's answer and when it was sent."""

    event: dict[str, Any]
    status: int
    sent_at: float


def completion_events(session: dict[str, Any], price: dict[str, str]) -> list[dict[str, Any]]:
    """The events paying ``session`` (a created session's id, customer and metadata) sends,
    in Stripe's order; ``price`` is its line item's price (``id``, ``lookup_key``)."""
    now = int(time.time())
    subscription_id = "sub_" + secrets.token_hex(12)
    metadata = session.get("subscription_metadata") or {}
    created = sample_event("customer.subscription.created")
    subscription = created["data"]["object"]
    subscription.update(
        id=subscription_id,
        customer=session["customer"],
        status="active",
        metadata=metadata,
        created=now,
    )
    for item in subscription["items"]["data"]:
        item["subscription"] = subscription_id
        item["price"].update(id=price["id"], lookup_key=price["lookup_key"])
        item["plan"]["id"] = price["id"]
    completed = sample_event("checkout.session.completed")
    completed["created"] = now + 1
    completed["data"]["object"].update(
        id=session["id"],
        customer=session["customer"],
        mode="subscription",
        subscription=subscription_id,
        payment_status="paid",
        status="complete",
        metadata=session.get("metadata") or {},
    )
    return [created, completed]


def deliver(url: str, secret: str, event: dict[str, Any]) -> Delivery:
    """POST ``event`` to the endpoint at ``url``, signed with its ``secret``."""
    body = json.dumps(event).encode()
    headers = {
        "Content-Type": "application/json; charset=utf-8",
        "Stripe-Signature": sign_header(secret.encode(), body),
    }
    sent_at = time.time()
    response = httpx.post(url, content=body, headers=headers, timeout=30)
    return Delivery(event, response.status_code, sent_at)
