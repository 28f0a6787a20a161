"""The billing functions: what each is called, which factory builds it, what it needs.

Plain data without dependencies, so that the deploy wing (Knative Services, generated
``functions/<name>/main.py``) reads it without importing the functions' HTTP stack.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Need(StrEnum):
    """What a billing function's deployment must give it (the deploy wing reads it)."""

    #: Publishes to NATS: NATS_URL and the publisher's credentials.
    NATS = "nats"
    #: Callers must authenticate: USAGE_API_TOKEN from a Secret.
    USAGE_TOKEN = "usage_token"
    #: Calls Stripe's API: STRIPE_API_KEY from a Secret, the Checkout/Portal URLs; no caller
    #: authentication of its own, so its Service is cluster-local.
    STRIPE = "stripe"


@dataclass(frozen=True)
class BillingFunction:
    """A non-webhook function under ``functions/`` and its factory in ``billing.endpoints``."""

    name: str
    factory: str
    summary: str
    needs: frozenset[Need] = frozenset()

    @property
    def service_name(self) -> str:
        """Its Knative Service (DNS names take no underscores)."""
        return self.name.replace("_", "-")


#: The billing functions; ``stripe-bridge generate`` writes ``functions/<name>/main.py`` and
#: ``stripe-bridge knative render`` a Knative Service for each.
BILLING_FUNCTIONS: tuple[BillingFunction, ...] = (
    BillingFunction(
        "billing_usage",
        "make_usage_function",
        "record usage into USAGE",
        frozenset({Need.NATS, Need.USAGE_TOKEN}),
    ),
    BillingFunction(
        "billing_checkout",
        "make_checkout_function",
        "Checkout Session for a tier",
        frozenset({Need.STRIPE}),
    ),
    BillingFunction(
        "billing_portal",
        "make_portal_function",
        "Customer Portal session",
        frozenset({Need.STRIPE}),
    ),
)
