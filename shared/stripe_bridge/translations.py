"""Typed, versioned translations of the Stripe event types the bridge understands.

The models are the consumer SDK's (``stripe_bridge_events.models``); this module fills
them from Stripe events. Each translation reads ``api_version`` and copes with both the
pre-basil object shapes and the 2025-03-31.basil ones, preferring the shape the version
announces and falling back to the other when a field is missing (accounts pin versions,
fixtures get mixed).
"""

from __future__ import annotations

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


def _id(value: Any) -> str | None:
    """Stripe fields are either an id or an expanded object carrying one."""
    if isinstance(value, str):
        return value
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


def _subscription_item(item: dict[str, Any]) -> SubscriptionItem:
    price = item.get("price") or item.get("plan") or {}
    return SubscriptionItem(
        item_id=item.get("id"),
        price_id=_id(price),
        product_id=_id(price.get("product")),
        lookup_key=price.get("lookup_key"),
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
        price_id=_first_present(_id(line.get("price")), _id(pricing.get("price"))),
        quantity=line.get("quantity"),
        amount=line.get("amount"),
        period_start=period.get("start"),
        period_end=period.get("end"),
    )


def translate_invoice(event: StripeEvent) -> InvoiceChanged:
    """Translate ``invoice.paid`` and ``invoice.payment_failed``."""
    obj = event.data.object
    return InvoiceChanged(
        invoice_id=obj["id"],
        customer_id=_id(obj.get("customer")),
        subscription_id=_invoice_subscription(obj, event.is_basil_or_newer),
        status=obj.get("status"),
        billing_reason=obj.get("billing_reason"),
        currency=obj["currency"],
        amount_due=obj["amount_due"],
        amount_paid=obj["amount_paid"],
        amount_remaining=obj["amount_remaining"],
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
