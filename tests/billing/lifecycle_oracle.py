"""Histories of the six billing events from real payloads, and the lifecycle rule as an oracle.

``check_downstream`` states docs/billing.md's ordering rule directly on what OpenMeter
received (CloudEvent ids in arrival order), without the gate's code: it is what a test
compares the projector's output with.
"""

from __future__ import annotations

import copy
import random
from typing import Any

from stripe_bridge_testing.deliveries import fixture_event

from .sequences import CUSTOMER, SUB_A, SUB_B, T0, checkout_event, subscription_event

INV_A = "in_1KJqKBJDPojXS6LNJbvLUgEy"
INV_B = "in_1KJqKBJDPojXS6LNJbvLUgEz"
SUBSCRIPTION_TYPES = (
    "customer.subscription.created",
    "customer.subscription.updated",
    "customer.subscription.deleted",
)
STATUS_BY_TYPE = {
    "customer.subscription.created": ["incomplete", "trialing", "active"],
    "customer.subscription.updated": ["trialing", "active", "past_due", "unpaid"],
    "customer.subscription.deleted": ["canceled"],
}
_RANK = {"incomplete": 1, "trialing": 2, "active": 3, "past_due": 4, "unpaid": 5, "canceled": 7}


def invoice_event(event_id: str, event_type: str, created: int, invoice_id: str) -> dict[str, Any]:
    """The real invoice.paid / invoice.payment_failed, for CUSTOMER and ``invoice_id``."""
    name = "invoice_paid" if event_type == "invoice.paid" else "invoice_payment_failed"
    event = copy.deepcopy(fixture_event(name))
    event.update(id=event_id, created=created)
    event["data"]["object"].update(id=invoice_id, customer=CUSTOMER)
    return event


def random_billing_history(rng: random.Random, size: int) -> list[dict[str, Any]]:
    """``size`` events of the six types about two subscriptions and two invoices.

    Timestamps come from a narrow range so that equal ``created`` seconds are common.
    """
    events: list[dict[str, Any]] = []
    for n in range(size):
        created = T0 + rng.randrange(6)
        event_id = f"evt_l{n:03d}"
        kind = rng.random()
        if kind < 0.15:
            events.append(checkout_event(event_id, created, rng.choice([SUB_A, SUB_B]), "pro"))
        elif kind < 0.4:
            event_type = rng.choice(["invoice.paid", "invoice.payment_failed"])
            events.append(invoice_event(event_id, event_type, created, rng.choice([INV_A, INV_B])))
        else:
            event_type = rng.choice(SUBSCRIPTION_TYPES)
            status = rng.choice(STATUS_BY_TYPE[event_type])
            sub = rng.choice([SUB_A, SUB_B])
            events.append(subscription_event(event_id, event_type, created, sub, status))
    return events


def _version(event: dict[str, Any]) -> tuple[bool, int, int, str]:
    """docs/billing.md: subscription events above Checkout, then created, status, id."""
    if event["type"] == "checkout.session.completed":
        return (False, event["created"], 0, event["id"])
    status = event["data"]["object"].get("status")
    rank = _RANK.get(status, 1) if event["type"].startswith("customer.") else 1
    return (True, event["created"], rank, event["id"])


def _gate_of(event: dict[str, Any]) -> str:
    obj = event["data"]["object"]
    if event["type"] == "checkout.session.completed":
        return f"sub.{obj['subscription']}"
    return f"{'inv' if event['type'].startswith('invoice.') else 'sub'}.{obj['id']}"


def _received_gate(event_id: str, by_id: dict[str, dict[str, Any]]) -> str:
    """The gate a received id belongs to: ``<gate>.<type>`` or ``<stripe event id>.<type>``."""
    stripe_id = event_id.split(".")[0]
    if stripe_id in by_id:
        return _gate_of(by_id[stripe_id])
    return ".".join(event_id.split(".")[:2])


def check_downstream(history: list[dict[str, Any]], received: list[str]) -> None:
    """Assert the rule on ``received`` (CloudEvent ids, first arrival of each, in order)."""
    by_id = {e["id"]: e for e in history}
    assert len(received) == len(set(received)), "an id reached OpenMeter twice"
    gates = {_gate_of(e) for e in history}
    for gate in gates:
        about = [e for e in by_id.values() if _gate_of(e) == gate]
        mine = [i for i in received if _received_gate(i, by_id) == gate]
        if gate.startswith("sub."):
            assert mine[0] == f"{gate}.subscription.started", (gate, mine)
            assert mine.count(f"{gate}.subscription.started") == 1
            ended = f"{gate}.subscription.ended"
            deleted = any(e["type"] == "customer.subscription.deleted" for e in about)
            assert (ended in mine) == deleted, (gate, mine)
            if deleted:
                assert mine[-1] == ended, (gate, mine)
            updates = [by_id[i.split(".")[0]] for i in mine if i.endswith(".subscription.updated")]
            assert all(e["type"] == "customer.subscription.updated" for e in updates)
            versions = [_version(e) for e in updates]
            assert versions == sorted(versions) and len(set(versions)) == len(versions)
            newest = max(
                (e for e in about if e["type"] == "customer.subscription.updated"),
                key=_version,
                default=None,
            )
            if newest is not None and not deleted:
                # Without an end, the newest update always gets through (nothing outranks it)
                # unless the start it came with was already newer.
                started_by = [e for e in about if e["type"] != "customer.subscription.updated"]
                if not started_by or _version(newest) > max(map(_version, started_by)):
                    assert updates and updates[-1]["id"] == newest["id"], (gate, mine)
        else:
            success = f"{gate}.payment.success"
            paid = any(e["type"] == "invoice.paid" for e in about)
            assert (success in mine) == paid, (gate, mine)
            if paid:
                assert mine[-1] == success, (gate, mine)
            failures = [by_id[i.split(".")[0]] for i in mine if i.endswith(".payment.failed")]
            versions = [_version(e) for e in failures]
            assert versions == sorted(versions) and len(set(versions)) == len(versions)
