"""Event sequences for the tier projector, built from the real Stripe payloads in fixtures.

Each variant is a deep copy of a real event with its id, ``created``, status, price lookup
key or entitlements changed, the way a subscription's life produces them.
"""

from __future__ import annotations

import copy
import random
from typing import Any

from stripe_bridge.billing.tiers import TierConfig, TierDefinition
from stripe_bridge_testing.deliveries import fixture_event

CUSTOMER = "cus_IhGfebO16cMIGN"
SUB_A = "sub_JdIzvfy6o5GZRd"
SUB_B = "sub_JLEPMp81LApOJl"
PRODUCT = "prod_Ip4vqwv3EJ7Mi0"
T0 = 1_700_000_000

#: The real fixtures carry no lookup keys; their product is what makes them "pro".
CONFIG = TierConfig(
    tiers=[
        TierDefinition(name="free"),
        TierDefinition(name="pro", lookup_keys=["pro_monthly"], product_ids=[PRODUCT]),
        TierDefinition(name="teams", lookup_keys=["teams_monthly"]),
    ]
)

_SUBSCRIPTION_FIXTURES = {
    "customer.subscription.created": "subscription_created",
    "customer.subscription.updated": "subscription_updated",
    "customer.subscription.deleted": "subscription_deleted",
    "customer.subscription.trial_will_end": "subscription_trial_will_end",
}


def subscription_event(
    event_id: str,
    event_type: str,
    created: int,
    subscription_id: str,
    status: str,
    lookup_key: str | None = None,
    cancel_at_period_end: bool = False,
) -> dict[str, Any]:
    """A real subscription event of ``event_type`` made to say the given things."""
    event = copy.deepcopy(fixture_event(_SUBSCRIPTION_FIXTURES[event_type]))
    event.update(id=event_id, created=created)
    obj = event["data"]["object"]
    obj.update(id=subscription_id, customer=CUSTOMER, status=status)
    obj["cancel_at_period_end"] = cancel_at_period_end
    for item in obj["items"]["data"]:
        item["price"]["lookup_key"] = lookup_key
    return event


def checkout_event(
    event_id: str,
    created: int,
    subscription_id: str,
    tier: str | None,
    payment_status: str = "paid",
) -> dict[str, Any]:
    """The real checkout.session.completed, as a subscription-mode session.

    ``tier=None`` keeps the fixture's empty metadata: a session billing_checkout did not
    create (Payment Links, the Dashboard).
    """
    event = copy.deepcopy(fixture_event("checkout_session_completed"))
    event.update(id=event_id, created=created)
    obj = event["data"]["object"]
    obj.update(mode="subscription", subscription=subscription_id, payment_status=payment_status)
    if tier is not None:
        obj["metadata"] = {"tier": tier}
    return event


def entitlements_event(event_id: str, created: int, lookup_keys: list[str]) -> dict[str, Any]:
    """The real active-entitlement summary, for CUSTOMER with ``lookup_keys``."""
    event = copy.deepcopy(fixture_event("active_entitlement_summary_updated"))
    event.update(id=event_id, created=created)
    obj = event["data"]["object"]
    obj["customer"] = CUSTOMER
    template = obj["entitlements"]["data"][0]
    obj["entitlements"]["data"] = [
        {**template, "id": f"ent_{key}", "lookup_key": key} for key in lookup_keys
    ]
    return event


def lifecycle() -> list[dict[str, Any]]:
    """A customer's billing history in creation order, with same-second ties on purpose."""
    up = "customer.subscription.updated"
    return [
        subscription_event("evt_a1", "customer.subscription.created", T0, SUB_A, "incomplete"),
        checkout_event("evt_a2", T0, SUB_A, "pro"),
        subscription_event("evt_a3", up, T0, SUB_A, "active"),
        entitlements_event("evt_e1", T0 + 10, ["journeys"]),
        subscription_event("evt_a4", up, T0 + 60, SUB_A, "active", "teams_monthly"),
        subscription_event("evt_a5", up, T0 + 120, SUB_A, "past_due", "teams_monthly"),
        entitlements_event("evt_e2", T0 + 130, []),
        subscription_event("evt_b1", up, T0 + 200, SUB_B, "active"),
        subscription_event("evt_a6", up, T0 + 180, SUB_A, "active", "teams_monthly", True),
        subscription_event("evt_a7", "customer.subscription.deleted", T0 + 240, SUB_A, "canceled"),
        entitlements_event("evt_e3", T0 + 250, ["journeys", "seats"]),
    ]


def random_history(rng: random.Random, size: int) -> list[dict[str, Any]]:
    """``size`` events about CUSTOMER with random types, statuses, tiers and close timestamps.

    Timestamps come from a narrow range so that equal ``created`` seconds are common.
    """
    statuses = ["incomplete", "trialing", "active", "past_due", "unpaid", "canceled"]
    events: list[dict[str, Any]] = []
    for n in range(size):
        created = T0 + rng.randrange(6)
        kind = rng.random()
        event_id = f"evt_r{n:03d}"
        if kind < 0.15:
            keys = rng.sample(["journeys", "seats", "sso", "audit"], rng.randrange(4))
            events.append(entitlements_event(event_id, created, sorted(keys)))
        elif kind < 0.3:
            tier = rng.choice([None, "pro", "teams"])
            paid = rng.choice(["paid", "no_payment_required", "unpaid"])
            sub_id = rng.choice([SUB_A, SUB_B])
            events.append(checkout_event(event_id, created, sub_id, tier, paid))
        else:
            event_type = rng.choice(sorted(_SUBSCRIPTION_FIXTURES))
            key = rng.choice([None, "pro_monthly", "teams_monthly"])
            events.append(
                subscription_event(
                    event_id,
                    event_type,
                    created,
                    rng.choice([SUB_A, SUB_B]),
                    rng.choice(statuses),
                    key,
                    rng.random() < 0.2,
                )
            )
    return events


def deliveries(events: list[dict[str, Any]], rng: random.Random) -> list[dict[str, Any]]:
    """Stripe's view of delivery: every event at least once, some twice, in random order."""
    out = events + [e for e in events if rng.random() < 0.4]
    rng.shuffle(out)
    return out
