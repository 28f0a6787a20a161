"""Typed CloudEvents of stripe-bridge's STRIPE stream, for the services that consume it.

    from stripe_bridge_events import TypedEvent, InvoiceChanged, parse

    event = parse(msg.data)
    if isinstance(event, TypedEvent) and isinstance(event.translation, InvoiceChanged):
        ...

See docs/consumers.md in the bridge's repository.
"""

from .deadletter import dead_letter, redrive_filter
from .events import (
    DATA_SCHEMA_URN_PREFIX,
    CloudEventMessage,
    StripeCloudEvent,
    TypedEvent,
    Untranslated,
    UntranslatedEvent,
    parse,
)
from .models import (
    MODELS,
    SCHEMA_URN_PREFIX,
    ActiveEntitlementSummary,
    CheckoutSessionCompleted,
    Entitlement,
    InvoiceChanged,
    InvoiceLine,
    SubscriptionChanged,
    SubscriptionItem,
    Translation,
)
from .ordering import Applied, LatestApplied, is_stale, object_key, position

__all__ = [
    "DATA_SCHEMA_URN_PREFIX",
    "MODELS",
    "SCHEMA_URN_PREFIX",
    "ActiveEntitlementSummary",
    "Applied",
    "CheckoutSessionCompleted",
    "CloudEventMessage",
    "Entitlement",
    "InvoiceChanged",
    "InvoiceLine",
    "LatestApplied",
    "StripeCloudEvent",
    "SubscriptionChanged",
    "SubscriptionItem",
    "Translation",
    "TypedEvent",
    "Untranslated",
    "UntranslatedEvent",
    "dead_letter",
    "is_stale",
    "object_key",
    "parse",
    "position",
    "redrive_filter",
]
