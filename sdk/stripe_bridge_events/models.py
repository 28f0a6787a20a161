"""The typed, versioned translations the bridge publishes in ``data.translation``.

The bridge builds these from Stripe events (``stripe_bridge.translations``); consumers get
them back from ``stripe_bridge_events.parse``. ``SCHEMA`` is the versioned name a
CloudEvent's ``dataschema`` carries (``urn:stripe-bridge:schema:<SCHEMA>``); a change that
is not backwards compatible gets a new version, never an edit of an old one.
"""

from __future__ import annotations

from typing import ClassVar

from pydantic import BaseModel, ConfigDict

#: ``dataschema`` = this prefix + a model's ``SCHEMA``; the JSON Schema of each is
#: ``schemas/<SCHEMA>.json`` in the bridge's repository, with this URN as its ``$id``.
SCHEMA_URN_PREFIX = "urn:stripe-bridge:schema:"


#: Every model is built on first use, not at import: a bridge function imports this
#: package for the one translation its event type needs (issue #20, bench/README.md).
DEFERRED = ConfigDict(frozen=True, defer_build=True)


class Translation(BaseModel):
    """Base of every typed translation; ``SCHEMA`` names the versioned data schema."""

    model_config = DEFERRED

    SCHEMA: ClassVar[str]

    @classmethod
    def dataschema(cls) -> str:
        """The CloudEvents ``dataschema`` attribute of events carrying this model."""
        return SCHEMA_URN_PREFIX + cls.SCHEMA

    def version_fields(self) -> tuple[int, ...]:
        """Fields of the Stripe object that only grow, to order events of one second.

        Stripe's ``created`` has a one-second resolution and Stripe does not deliver in
        order; models whose object has such a field override this (see ``ordering``).
        """
        return ()


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

    model_config = DEFERRED

    item_id: str | None
    price_id: str | None
    product_id: str | None
    lookup_key: str | None
    #: The price's ``unit_amount`` (a plan's ``amount`` before prices); None when tiered.
    unit_amount: int | None = None
    currency: str | None = None
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

    def version_fields(self) -> tuple[int, ...]:
        """A renewal moves the period forward; Stripe never moves it back."""
        return (self.current_period_start or 0,)


class InvoiceLine(BaseModel):
    """One line of an invoice, reduced to what billing consumers use."""

    model_config = DEFERRED

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

    def version_fields(self) -> tuple[int, ...]:
        """Each payment attempt increments ``attempt_count``; payments only add up."""
        return (self.attempt_count or 0, self.amount_paid)


class Entitlement(BaseModel):
    """One active entitlement (a feature the customer may use)."""

    model_config = DEFERRED

    entitlement_id: str | None
    feature_id: str | None
    lookup_key: str | None


class ActiveEntitlementSummary(Translation):
    """The full set of a customer's active entitlements after a change."""

    SCHEMA: ClassVar[str] = "active_entitlement_summary.v1"

    customer_id: str
    entitlements: list[Entitlement]


#: Every translation model, by its ``dataschema``.
MODELS: dict[str, type[Translation]] = {
    model.dataschema(): model
    for model in (
        CheckoutSessionCompleted,
        SubscriptionChanged,
        InvoiceChanged,
        ActiveEntitlementSummary,
    )
}
