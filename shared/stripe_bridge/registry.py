"""The one list of Stripe event types the bridge serves.

Functions under ``functions/``, the Knative services, the docs table and the dashboards
are all generated from ``EVENT_TYPES``; tests fail when a generated file drifts.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from stripe_bridge_events.models import (
    ActiveEntitlementSummary,
    CheckoutSessionCompleted,
    InvoiceChanged,
    SubscriptionChanged,
    Translation,
)

from .envelope import StripeEvent
from .names import capped
from .translations import (
    translate_checkout_session,
    translate_entitlement_summary,
    translate_invoice,
    translate_subscription,
)

#: Name of the function that accepts every event type (single-endpoint setups).
CATCH_ALL = "stripe_event"


@dataclass(frozen=True)
class EventType:
    """A Stripe event type with its typed translation."""

    name: str
    model: type[Translation]
    translate: Callable[[StripeEvent], Translation]
    summary: str

    @property
    def function_name(self) -> str:
        """The function's folder under ``functions/`` (dots become underscores)."""
        return self.name.replace(".", "_")

    @property
    def service_name(self) -> str:
        """A DNS-1035 name for the Knative Service (underscores become dashes), capped."""
        return capped("stripe-" + self.function_name.replace("_", "-"))


EVENT_TYPES: tuple[EventType, ...] = (
    EventType(
        "checkout.session.completed",
        CheckoutSessionCompleted,
        translate_checkout_session,
        "A customer completed Checkout (payment or new subscription).",
    ),
    EventType(
        "customer.subscription.created",
        SubscriptionChanged,
        translate_subscription,
        "A subscription was created.",
    ),
    EventType(
        "customer.subscription.updated",
        SubscriptionChanged,
        translate_subscription,
        "A subscription changed (plan, status, cancellation, period).",
    ),
    EventType(
        "customer.subscription.deleted",
        SubscriptionChanged,
        translate_subscription,
        "A subscription ended.",
    ),
    EventType(
        "customer.subscription.trial_will_end",
        SubscriptionChanged,
        translate_subscription,
        "A trial ends in three days.",
    ),
    EventType(
        "invoice.paid",
        InvoiceChanged,
        translate_invoice,
        "An invoice was paid (also on month-end renewals).",
    ),
    EventType(
        "invoice.payment_succeeded",
        InvoiceChanged,
        translate_invoice,
        "A payment on an invoice succeeded (what accounts on older API versions listen to).",
    ),
    EventType(
        "invoice.payment_failed",
        InvoiceChanged,
        translate_invoice,
        "A payment attempt on an invoice failed (dunning starts).",
    ),
    EventType(
        "entitlements.active_entitlement_summary.updated",
        ActiveEntitlementSummary,
        translate_entitlement_summary,
        "A customer's active entitlements changed.",
    ),
)

_BY_NAME = {event_type.name: event_type for event_type in EVENT_TYPES}
_BY_FUNCTION = {event_type.function_name: event_type for event_type in EVENT_TYPES}


def lookup(name: str) -> EventType | None:
    """The registered event type called ``name``, or None for untranslated types."""
    return _BY_NAME.get(name)


def by_function(function_name: str) -> EventType:
    """The event type served by ``functions/<function_name>``; KeyError if none."""
    return _BY_FUNCTION[function_name]


def function_names() -> list[str]:
    """Every function folder name: one per registered type, then the catch-all."""
    return [event_type.function_name for event_type in EVENT_TYPES] + [CATCH_ALL]
