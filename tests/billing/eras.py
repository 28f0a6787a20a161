"""Stripe events in the object shapes of every API era, from Stripe's own example objects.

``tests/fixtures/eras/<version>.json`` holds the example invoice and subscription of
``openapi/fixtures3.json`` in stripe/openapi at a commit of that era (each file names it):
2017-08-15 (plans only, invoices without ``amount_paid``/``amount_remaining``),
2018-05-21 (those amounts arrive), 2024-06-20 (prices beside plans), 2025-03-31.basil
(``parent``, ``pricing``, periods on items, no ``paid``) and the newest. ``era_event``
wraps one in an event and gives it the same customer, ids, price and amounts wherever
*that era's object* carries them, so every era must give the same billing results.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "eras"
ERAS = sorted(path.stem for path in FIXTURES.glob("*.json"))
CUSTOMER = "cus_Era"
PRICE = "price_era_pro"
PRODUCT = "prod_era_pro"
AMOUNT = 2000
#: The object each event type carries.
OBJECT_OF = {
    "customer.subscription.created": "subscription",
    "customer.subscription.updated": "subscription",
    "customer.subscription.deleted": "subscription",
    "invoice.paid": "invoice",
    "invoice.payment_succeeded": "invoice",
    "invoice.payment_failed": "invoice",
}


def era_fixture(era: str) -> dict[str, Any]:
    """The stored example objects of ``era`` and its ``api_version``."""
    fixture: dict[str, Any] = json.loads((FIXTURES / f"{era}.json").read_text())
    return fixture


def _walk(value: Any, subscription_id: str) -> None:
    """Point every relation the example object holds at the era-independent ids."""
    if isinstance(value, list):
        for item in value:
            _walk(item, subscription_id)
        return
    if not isinstance(value, dict):
        return
    kind = value.get("object")
    if kind in ("plan", "price"):
        value.update(id=PRICE, product=PRODUCT, currency="usd")
        value["amount" if kind == "plan" else "unit_amount"] = AMOUNT
    if kind == "line_item":
        value.update(amount=AMOUNT, quantity=1)
        if "pricing" in value:
            # basil's price reference; the example object leaves it out, real basil
            # payloads carry it (tests/fixtures/invoice_paid_basil.json).
            value["pricing"] = {"type": "price_details", "price_details": {"price": PRICE}}
    for key, inner in value.items():
        if key == "customer" and isinstance(inner, str):
            value[key] = CUSTOMER
        elif key == "subscription" and isinstance(inner, str):
            value[key] = subscription_id
        else:
            _walk(inner, subscription_id)


def era_event(
    era: str,
    event_type: str,
    event_id: str,
    created: int,
    subscription_id: str,
    invoice_id: str = "in_era",
    status: str = "active",
) -> dict[str, Any]:
    """``event_type`` in ``era``'s shape; an invoice is paid unless the payment failed."""
    fixture = era_fixture(era)
    kind = OBJECT_OF[event_type]
    obj = copy.deepcopy(fixture[kind])
    _walk(obj, subscription_id)
    obj["customer"] = CUSTOMER
    if kind == "subscription":
        obj.update(id=subscription_id, status=status, cancel_at_period_end=False)
    else:
        paid = event_type != "invoice.payment_failed"
        obj.update(id=invoice_id, currency="usd", amount_due=AMOUNT, attempt_count=1)
        obj["status"] = "paid" if paid else "open"
        # Only the fields this era has: 2017's invoice says ``paid`` and nothing more.
        for key, value in (
            ("amount_paid", AMOUNT if paid else 0),
            ("amount_remaining", 0 if paid else AMOUNT),
            ("paid", paid),
        ):
            if key in obj:
                obj[key] = value
        if "parent" in obj:  # basil moved the link under parent.subscription_details
            details = {"subscription": subscription_id, "metadata": {}}
            obj["parent"] = {"type": "subscription_details", "subscription_details": details}
        else:
            obj["subscription"] = subscription_id
    return {
        "id": event_id,
        "object": "event",
        "api_version": fixture["api_version"],
        "created": created,
        "data": {"object": obj},
        "livemode": False,
        "pending_webhooks": 1,
        "request": {"id": None, "idempotency_key": None},
        "type": event_type,
    }
