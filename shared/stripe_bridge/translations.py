"""Typed, versioned translations of the Stripe event types the bridge understands.

The models are the consumer SDK's (``stripe_bridge_events.models``); this module fills
them from Stripe events. Each translation reads ``api_version`` and copes with both the
object shapes of every API era (docs/event-types.md, "Fields by API era"): plans before
prices (2017-08-15: items and lines carry only ``plan``), invoices before ``amount_paid``
and ``amount_remaining``, and the 2025-03-31.basil moves. Each prefers the shape the
version announces and falls back to the others when a field is missing (accounts pin
versions, fixtures get mixed); only the fields a model cannot do without are required.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from stripe_bridge_events.models import (
    ActiveEntitlementSummary,
    CheckoutSessionCompleted,
    Entitlement,
    InvoiceChanged,
    InvoiceLine,
    SubscriptionChanged,
    SubscriptionItem,
)

from .envelope import StripeEvent


@dataclass(frozen=True)
class FieldSource:
    """Where one translated field is read from in each API era (docs/event-types.md)."""

    field: str
    #: 2017-08-15: plans only; invoices say ``paid``, no ``amount_paid``/``amount_remaining``.
    v2017: str
    #: From 2018 (Stripe's example invoices have them from 2018-04): ``amount_paid`` and
    #: ``amount_remaining`` on invoices.
    v2018: str
    #: From 2020 (the Prices API; Stripe's examples have ``price`` from 2020-08): items
    #: and lines carry ``price`` (and still ``plan``).
    v2020: str
    #: 2025-03-31.basil and newer.
    basil: str


#: The era table of docs/event-types.md: what each translation reads, era by era.
FIELD_SOURCES = (
    FieldSource(
        "invoice `amount_paid`",
        "`amount_due` if `paid`, else 0",
        "`amount_paid`",
        "`amount_paid`",
        "`amount_paid`",
    ),
    FieldSource(
        "invoice `amount_remaining`",
        "`amount_due` - `amount_paid`",
        "`amount_remaining`",
        "`amount_remaining`",
        "`amount_remaining`",
    ),
    FieldSource(
        "invoice `subscription_id`",
        "`subscription`",
        "`subscription`",
        "`subscription`",
        "`parent.subscription_details.subscription`",
    ),
    FieldSource(
        "invoice line `price_id`",
        "`plan.id`",
        "`plan.id`",
        "`price.id` (else `plan.id`)",
        "`pricing.price_details.price`",
    ),
    FieldSource(
        "item `price_id`, `product_id`, `lookup_key`",
        "`plan`",
        "`plan`",
        "`price` (else `plan`)",
        "`price`",
    ),
    FieldSource(
        "item `unit_amount`, `currency`",
        "`plan.amount`, `plan.currency`",
        "`plan.amount`, `plan.currency`",
        "`price.unit_amount` (else `plan.amount`)",
        "`price.unit_amount`",
    ),
    FieldSource(
        "subscription `current_period_start`/`_end`",
        "the subscription's",
        "the subscription's",
        "the subscription's",
        "the items' (earliest start, latest end)",
    ),
)


def _id(value: Any) -> str | None:
    """Stripe fields are either an id or an expanded object carrying one (never "")."""
    if isinstance(value, str):
        return value or None
    if isinstance(value, dict):
        inner = value.get("id")
        return inner if isinstance(inner, str) else None
    return None


def _list_data(value: Any) -> list[dict[str, Any]]:
    if isinstance(value, dict) and isinstance(value.get("data"), list):
        return [item for item in value["data"] if isinstance(item, dict)]
    return []


def _first_present(*values: Any) -> Any:
    return next((v for v in values if v is not None), None)


def translate_checkout_session(event: StripeEvent) -> CheckoutSessionCompleted:
    """Translate ``checkout.session.completed``."""
    obj = event.data.object
    details = obj.get("customer_details") or {}
    return CheckoutSessionCompleted(
        session_id=obj["id"],
        customer_id=_id(obj.get("customer")),
        customer_email=_first_present(obj.get("customer_email"), details.get("email")),
        client_reference_id=obj.get("client_reference_id"),
        mode=obj["mode"],
        status=obj.get("status"),
        payment_status=obj.get("payment_status"),
        subscription_id=_id(obj.get("subscription")),
        invoice_id=_id(obj.get("invoice")),
        amount_total=obj.get("amount_total"),
        currency=obj.get("currency"),
        metadata=obj.get("metadata") or {},
    )


def price_of(holder: dict[str, Any]) -> dict[str, Any]:
    """The price of a subscription item or invoice line: ``price`` since the Prices API
    (2020), the ``plan`` it replaced before (the only one in 2017-08-15 payloads)."""
    for key in ("price", "plan"):
        found = holder.get(key)
        if isinstance(found, dict):
            return found
    return {}


def unit_amount(price: dict[str, Any]) -> int | None:
    """A price's ``unit_amount``, or the ``amount`` of a plan (the same, named before prices)."""
    found = _first_present(price.get("unit_amount"), price.get("amount"))
    return found if isinstance(found, int) else None


def _subscription_item(item: dict[str, Any]) -> SubscriptionItem:
    price = price_of(item)
    return SubscriptionItem(
        item_id=item.get("id"),
        price_id=_id(price),
        product_id=_id(price.get("product")),
        lookup_key=price.get("lookup_key"),
        unit_amount=unit_amount(price),
        currency=price.get("currency"),
        quantity=item.get("quantity"),
        current_period_start=item.get("current_period_start"),
        current_period_end=item.get("current_period_end"),
    )


def translate_subscription(event: StripeEvent) -> SubscriptionChanged:
    """Translate ``customer.subscription.*``; periods moved onto items in basil."""
    obj = event.data.object
    items = [_subscription_item(i) for i in _list_data(obj.get("items"))]
    item_starts = [i.current_period_start for i in items if i.current_period_start is not None]
    item_ends = [i.current_period_end for i in items if i.current_period_end is not None]
    from_items = (min(item_starts, default=None), max(item_ends, default=None))
    from_object = (obj.get("current_period_start"), obj.get("current_period_end"))
    first, second = (
        (from_items, from_object) if event.is_basil_or_newer else (from_object, from_items)
    )
    return SubscriptionChanged(
        subscription_id=obj["id"],
        customer_id=_id(obj.get("customer")),
        status=obj["status"],
        cancel_at_period_end=bool(obj.get("cancel_at_period_end")),
        cancel_at=obj.get("cancel_at"),
        canceled_at=obj.get("canceled_at"),
        ended_at=obj.get("ended_at"),
        trial_start=obj.get("trial_start"),
        trial_end=obj.get("trial_end"),
        current_period_start=_first_present(first[0], second[0]),
        current_period_end=_first_present(first[1], second[1]),
        items=items,
        metadata=obj.get("metadata") or {},
        changed_fields=sorted((event.data.previous_attributes or {}).keys()),
    )


def _invoice_subscription(obj: dict[str, Any], basil: bool) -> str | None:
    parent = obj.get("parent") or {}
    from_parent = _id((parent.get("subscription_details") or {}).get("subscription"))
    legacy = _id(obj.get("subscription"))
    chosen: str | None = (
        _first_present(from_parent, legacy) if basil else _first_present(legacy, from_parent)
    )
    return chosen


def _invoice_line(line: dict[str, Any]) -> InvoiceLine:
    period = line.get("period") or {}
    pricing = (line.get("pricing") or {}).get("price_details") or {}
    return InvoiceLine(
        line_id=line.get("id"),
        # price (2020), plan (before), pricing.price_details.price (basil).
        price_id=_first_present(_id(price_of(line)), _id(pricing.get("price"))),
        quantity=line.get("quantity"),
        amount=line.get("amount"),
        period_start=period.get("start"),
        period_end=period.get("end"),
    )


def invoice_amounts(obj: dict[str, Any]) -> tuple[int, int, int]:
    """``(amount_due, amount_paid, amount_remaining)`` of an invoice of any era.

    ``amount_paid`` and ``amount_remaining`` arrived in 2018 (absent from Stripe's example
    invoices until 2018-04, present since); before, an invoice said only ``paid``. Stripe
    defines ``amount_remaining`` as ``amount_due - amount_paid``, and a paid invoice of
    that era was paid in full (partial payments came with basil).
    """
    due = int(obj["amount_due"])
    paid = obj.get("amount_paid")
    if paid is None:
        paid = due if obj.get("paid") else 0
    remaining = obj.get("amount_remaining")
    return due, int(paid), int(due - paid if remaining is None else remaining)


def translate_invoice(event: StripeEvent) -> InvoiceChanged:
    """Translate ``invoice.paid``, ``invoice.payment_succeeded`` and ``invoice.payment_failed``."""
    obj = event.data.object
    amount_due, amount_paid, amount_remaining = invoice_amounts(obj)
    return InvoiceChanged(
        invoice_id=obj["id"],
        customer_id=_id(obj.get("customer")),
        subscription_id=_invoice_subscription(obj, event.is_basil_or_newer),
        status=obj.get("status"),
        billing_reason=obj.get("billing_reason"),
        currency=obj["currency"],
        amount_due=amount_due,
        amount_paid=amount_paid,
        amount_remaining=amount_remaining,
        attempt_count=obj.get("attempt_count"),
        next_payment_attempt=obj.get("next_payment_attempt"),
        period_start=obj.get("period_start"),
        period_end=obj.get("period_end"),
        hosted_invoice_url=obj.get("hosted_invoice_url"),
        lines=[_invoice_line(line) for line in _list_data(obj.get("lines"))],
    )


def translate_entitlement_summary(event: StripeEvent) -> ActiveEntitlementSummary:
    """Translate ``entitlements.active_entitlement_summary.updated``."""
    obj = event.data.object
    return ActiveEntitlementSummary(
        customer_id=obj["customer"],
        entitlements=[
            Entitlement(
                entitlement_id=e.get("id"),
                feature_id=_id(e.get("feature")),
                lookup_key=e.get("lookup_key"),
            )
            for e in _list_data(obj.get("entitlements"))
        ],
    )
