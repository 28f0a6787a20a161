"""Typed, versioned translations of the Stripe event types the bridge understands.

Each translation reads ``api_version`` and copes with both the pre-basil object shapes
and the 2025-03-31.basil ones, preferring the shape the version announces and falling
back to the other when a field is missing (accounts pin versions, fixtures get mixed).
"""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict

from .envelope import StripeEvent


class Translation(BaseModel):
    """Base of every typed translation; ``SCHEMA`` names the versioned data schema."""

    model_config = ConfigDict(frozen=True)

    SCHEMA: ClassVar[str]


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


class CheckoutSessionCompleted(Translation):
    """A Checkout Session finished: the customer paid or subscribed."""

    SCHEMA: ClassVar[str] = "checkout_session.v1"

    session_id: str
    customer_id: str | None
    customer_email: str | None
    client_reference_id: str | None
    mode: str
    status: str | None
    payment_status: str | None
    subscription_id: str | None
    invoice_id: str | None
    amount_total: int | None
    currency: str | None
    metadata: dict[str, str]


class SubscriptionItem(BaseModel):
    """One priced line of a subscription."""

    model_config = ConfigDict(frozen=True)

    item_id: str | None
    price_id: str | None
    product_id: str | None
    lookup_key: str | None
    quantity: int | None
    current_period_start: int | None
    current_period_end: int | None


class SubscriptionChanged(Translation):
    """A subscription was created, updated, deleted or its trial is about to end."""

    SCHEMA: ClassVar[str] = "subscription.v1"

    subscription_id: str
    customer_id: str | None
    status: str
    cancel_at_period_end: bool
    cancel_at: int | None
    canceled_at: int | None
    ended_at: int | None
    trial_start: int | None
    trial_end: int | None
    current_period_start: int | None
    current_period_end: int | None
    items: list[SubscriptionItem]
    metadata: dict[str, str]
    changed_fields: list[str]


class InvoiceLine(BaseModel):
    """One line of an invoice, reduced to what billing consumers use."""

    model_config = ConfigDict(frozen=True)

    line_id: str | None
    price_id: str | None
    quantity: int | None
    amount: int | None
    period_start: int | None
    period_end: int | None


class InvoiceChanged(Translation):
    """An invoice was paid or a payment attempt on it failed."""

    SCHEMA: ClassVar[str] = "invoice.v1"

    invoice_id: str
    customer_id: str | None
    subscription_id: str | None
    status: str | None
    billing_reason: str | None
    currency: str
    amount_due: int
    amount_paid: int
    amount_remaining: int
    attempt_count: int | None
    next_payment_attempt: int | None
    period_start: int | None
    period_end: int | None
    hosted_invoice_url: str | None
    lines: list[InvoiceLine]


class Entitlement(BaseModel):
    """One active entitlement (a feature the customer may use)."""

    model_config = ConfigDict(frozen=True)

    entitlement_id: str | None
    feature_id: str | None
    lookup_key: str | None


class ActiveEntitlementSummary(Translation):
    """The full set of a customer's active entitlements after a change."""

    SCHEMA: ClassVar[str] = "active_entitlement_summary.v1"

    customer_id: str
    entitlements: list[Entitlement]


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
