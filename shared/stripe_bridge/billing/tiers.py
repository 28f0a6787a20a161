"""Subscription tiers and entitlements per customer, projected from the STRIPE stream into KV.

Stripe delivers out of order and more than once, so the projection is a pure reducer
whose result does not depend on arrival order: every fact carries a version
``(event created, object state rank, event id)`` and only a newer version replaces an older
one, except that a Checkout completion never replaces a fact from a subscription event (see
``Version.key``). Subscriptions are kept one record per subscription id; the customer's tier
is derived from them (the highest tier among subscriptions in a paying state). Writes to the
KV bucket are compare-and-set on the entry's revision, retried when another writer got there
first.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ..envelope import StripeEvent
from .limits import DEFAULT_METERS, METER_PATTERN, UnknownCustomer, WhenUnavailable, Window

TIERS_BUCKET = "BILLING_TIERS"

#: Position of a subscription status in its lifecycle: at equal ``created`` seconds the
#: later state wins (Stripe often sends created/updated/deleted within one second).
STATUS_RANK: dict[str, int] = {
    "incomplete": 1,
    "trialing": 2,
    "active": 3,
    "past_due": 4,
    "unpaid": 5,
    "paused": 5,
    "incomplete_expired": 6,
    "canceled": 7,
}
#: A checkout completion only hints at a subscription (a provisional tier until the first
#: subscription event); every subscription event outranks it, whatever its ``created``.
CHECKOUT_RANK = 0

SUBSCRIPTION_EVENTS = frozenset(
    {
        "customer.subscription.created",
        "customer.subscription.updated",
        "customer.subscription.deleted",
        "customer.subscription.trial_will_end",
        "customer.subscription.paused",
        "customer.subscription.resumed",
    }
)
CHECKOUT_EVENT = "checkout.session.completed"
ENTITLEMENTS_EVENT = "entitlements.active_entitlement_summary.updated"
PROJECTED_EVENTS = SUBSCRIPTION_EVENTS | {CHECKOUT_EVENT, ENTITLEMENTS_EVENT}


class TierDefinition(BaseModel):
    """One tier and the Stripe prices that grant it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(pattern=r"^[a-z][a-z0-9_-]*$")
    lookup_keys: list[str] = Field(default_factory=list, description="Price lookup keys.")
    price_ids: list[str] = Field(default_factory=list)
    product_ids: list[str] = Field(default_factory=list)
    checkout_price: str | None = Field(
        default=None, description="Price id or lookup key Checkout sells for this tier."
    )
    limits: dict[str, int | None] = Field(
        default_factory=dict,
        description="Meter -> most usage per window; null or absent: unlimited.",
    )
    features: dict[str, str | bool | int] = Field(
        default_factory=dict, description="Feature flags, e.g. modes: basic, shared_memory."
    )
    when_unavailable: WhenUnavailable = Field(
        default=WhenUnavailable.DENY,
        description="/v1/check's answer while NATS cannot be reached: allow or deny.",
    )


class TierConfig(BaseModel):
    """Tiers from lowest to highest; the first is what customers without a paid plan get."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    tiers: list[TierDefinition] = Field(min_length=1)
    metadata_key: str = Field(
        default="tier", description="Price/product/subscription metadata naming a tier."
    )
    paying_statuses: frozenset[str] = frozenset({"active", "trialing", "past_due"})
    meters: dict[Annotated[str, Field(pattern=METER_PATTERN, max_length=64)], Window] = Field(
        default_factory=lambda: dict(DEFAULT_METERS),
        description="Every meter counted for limits (an OpenMeter meter slug), and its window.",
    )
    unknown_customer: UnknownCustomer = Field(
        default=UnknownCustomer.DEFAULT_TIER,
        description="Customers never projected get the first tier's limits, or are denied.",
    )

    @model_validator(mode="after")
    def _unique_names(self) -> TierConfig:
        names = [t.name for t in self.tiers]
        if len(set(names)) != len(names):
            raise ValueError("tier names must be unique")
        for tier in self.tiers:
            unknown = sorted(set(tier.limits) - set(self.meters))
            if unknown:
                raise ValueError(f"tier {tier.name}: limits on unknown meters {unknown}")
        return self

    @property
    def default_tier(self) -> str:
        """The tier of customers with no paying subscription."""
        return self.tiers[0].name

    def rank(self, name: str) -> int:
        """Position of tier ``name`` (unknown names rank below every tier)."""
        for index, tier in enumerate(self.tiers):
            if tier.name == name:
                return index
        return -1

    def get(self, name: str) -> TierDefinition | None:
        """The tier called ``name``."""
        return next((t for t in self.tiers if t.name == name), None)

    def tier_named_in(self, metadata: Any) -> str | None:
        """The configured tier that ``metadata[metadata_key]`` names, if any."""
        if isinstance(metadata, dict):
            value = metadata.get(self.metadata_key)
            if isinstance(value, str) and self.get(value) is not None:
                return value
        return None

    def tier_for_price(self, price: dict[str, Any]) -> str | None:
        """The tier a Stripe price (with its product id or expanded product) grants."""
        product = price.get("product")
        product_id = product.get("id") if isinstance(product, dict) else product
        for tier in reversed(self.tiers):
            if (
                (price.get("lookup_key") and price["lookup_key"] in tier.lookup_keys)
                or price.get("id") in tier.price_ids
                or (product_id is not None and product_id in tier.product_ids)
            ):
                return tier.name
        named = self.tier_named_in(price.get("metadata"))
        if named is None and isinstance(product, dict):
            named = self.tier_named_in(product.get("metadata"))
        return named

    def tier_for_subscription(self, subscription: dict[str, Any]) -> str | None:
        """The highest tier any item of a Stripe subscription object grants."""
        items = (subscription.get("items") or {}).get("data") or []
        found = [
            tier
            for item in items
            if isinstance(item, dict)
            and (tier := self.tier_for_price(item.get("price") or item.get("plan") or {}))
        ]
        if not found:
            return self.tier_named_in(subscription.get("metadata"))
        return max(found, key=self.rank)

    @classmethod
    def load(cls, path: Path | None) -> TierConfig:
        """Read a YAML/JSON tier file; without one, the built-in Free/Pro/Teams tiers."""
        if path is None:
            return DEFAULT_TIERS
        raw = None
        if path.suffix in {".yml", ".yaml"}:
            import yaml  # here: only a YAML tier file needs it, not a function's cold start

            raw = yaml.safe_load(path.read_text())
        if raw is None:
            raw = json.loads(path.read_text())
        return cls.model_validate(raw)


#: The shipped tiers: the limits of the system this project replaces, as examples (every
#: number is configurable per tier in the tier file; docs/billing.md shows it as YAML).
DEFAULT_TIERS = TierConfig(
    tiers=[
        TierDefinition(
            name="free",
            limits={
                "api_calls": 100,
                "tokens": 10_000,
                "requests": 60,
                "members": 1,
                "citizens": 3,
            },
            features={"modes": "basic", "shared_memory": False, "multi_tenant": False},
        ),
        TierDefinition(
            name="pro",
            lookup_keys=["pro_monthly", "pro_yearly"],
            checkout_price="pro_monthly",
            limits={
                "api_calls": 10_000,
                "tokens": 100_000,
                "requests": 600,
                "members": 1,
                "citizens": None,
            },
            features={"modes": "all", "shared_memory": False, "multi_tenant": False},
            when_unavailable=WhenUnavailable.ALLOW,
        ),
        TierDefinition(
            name="teams",
            lookup_keys=["teams_monthly", "teams_yearly"],
            checkout_price="teams_monthly",
            limits={
                "api_calls": 100_000,
                "tokens": 1_000_000,
                "requests": 6_000,
                "members": 10,
                "citizens": None,
            },
            features={"modes": "all", "shared_memory": True, "multi_tenant": True},
            when_unavailable=WhenUnavailable.ALLOW,
        ),
    ]
)


class Version(BaseModel):
    """Total order of facts: subscription events above Checkout, then ``created``, rank, id."""

    model_config = ConfigDict(frozen=True)

    created: int
    rank: int
    event_id: str

    def key(self) -> tuple[bool, int, int, str]:
        """The comparable tuple; the larger one is the fact to keep.

        Stripe sends ``checkout.session.completed`` a second or more *after*
        ``customer.subscription.created``, and a session made by Payment Links or the Dashboard
        names no tier, so ordering by ``created`` alone would let the session wipe the
        subscription's tier, status and cancel flag. Only subscription events describe the
        subscription itself, hence they come first; among themselves (and among sessions) the
        newest wins as before. A total order keeps the reducer independent of arrival order.
        """
        return (self.rank > CHECKOUT_RANK, self.created, self.rank, self.event_id)


class Cause(BaseModel):
    """The Stripe event that set a fact (what ``stripe-bridge tier`` shows as "why")."""

    model_config = ConfigDict(frozen=True)

    event_id: str
    event_type: str
    created: int


class SubscriptionRecord(BaseModel):
    """The newest known state of one subscription."""

    model_config = ConfigDict(frozen=True)

    subscription_id: str
    status: str
    tier: str | None
    cancel_at_period_end: bool = False
    version: Version
    cause: Cause


class EntitlementsRecord(BaseModel):
    """The newest active-entitlement summary: feature lookup keys."""

    model_config = ConfigDict(frozen=True)

    lookup_keys: list[str]
    version: Version
    cause: Cause


class CustomerState(BaseModel):
    """What the KV bucket holds per customer (key: the Stripe customer id)."""

    model_config = ConfigDict(frozen=True)

    customer_id: str
    tier: str
    tier_cause: Cause | None = None
    subscriptions: dict[str, SubscriptionRecord] = Field(default_factory=dict)
    entitlements: EntitlementsRecord | None = None


class Update(BaseModel):
    """One projected fact from one Stripe event, for one customer."""

    model_config = ConfigDict(frozen=True)

    customer_id: str
    subscription: SubscriptionRecord | None = None
    entitlements: EntitlementsRecord | None = None


def update_from_event(event: StripeEvent, config: TierConfig) -> Update | None:
    """The fact a Stripe event contributes, or None if it says nothing about tiers."""
    obj = event.data.object
    cause = Cause(event_id=event.id, event_type=event.type, created=event.created)
    customer = obj.get("customer")
    customer_id = customer.get("id") if isinstance(customer, dict) else customer
    if not isinstance(customer_id, str) or not customer_id:
        return None
    if event.type in SUBSCRIPTION_EVENTS:
        status = str(obj["status"])
        # A status Stripe adds later is still a subscription event: it must outrank Checkout.
        rank = STATUS_RANK.get(status, STATUS_RANK["incomplete"])
        record = SubscriptionRecord(
            subscription_id=str(obj["id"]),
            status=status,
            tier=config.tier_for_subscription(obj),
            cancel_at_period_end=bool(obj.get("cancel_at_period_end")),
            version=Version(created=event.created, rank=rank, event_id=event.id),
            cause=cause,
        )
        return Update(customer_id=customer_id, subscription=record)
    if event.type == CHECKOUT_EVENT:
        subscription = obj.get("subscription")
        sub_id = subscription.get("id") if isinstance(subscription, dict) else subscription
        if obj.get("mode") != "subscription" or not isinstance(sub_id, str):
            return None
        record = SubscriptionRecord(
            subscription_id=sub_id,
            status="active" if obj.get("payment_status") in ("paid", "no_payment_required")
            else "incomplete",
            tier=config.tier_named_in(obj.get("metadata")),
            version=Version(created=event.created, rank=CHECKOUT_RANK, event_id=event.id),
            cause=cause,
        )  # fmt: skip
        return Update(customer_id=customer_id, subscription=record)
    if event.type == ENTITLEMENTS_EVENT:
        items = (obj.get("entitlements") or {}).get("data") or []
        keys = sorted({str(e["lookup_key"]) for e in items if e.get("lookup_key")})
        version = Version(created=event.created, rank=0, event_id=event.id)
        entitlements = EntitlementsRecord(lookup_keys=keys, version=version, cause=cause)
        return Update(customer_id=customer_id, entitlements=entitlements)
    return None


def _derive_tier(
    subscriptions: dict[str, SubscriptionRecord], config: TierConfig
) -> tuple[str, Cause | None]:
    paying = [s for s in subscriptions.values() if s.status in config.paying_statuses and s.tier]
    if paying:
        best = max(paying, key=lambda s: (config.rank(s.tier or ""), s.version.key()))
        return best.tier or config.default_tier, best.cause
    newest = max(subscriptions.values(), key=lambda s: s.version.key(), default=None)
    return config.default_tier, newest.cause if newest else None


def apply(state: CustomerState | None, update: Update, config: TierConfig) -> CustomerState:
    """The customer's state after ``update``: newer versions win, older ones change nothing."""
    subscriptions = dict(state.subscriptions) if state else {}
    entitlements = state.entitlements if state else None
    incoming = update.subscription
    if incoming is not None:
        current = subscriptions.get(incoming.subscription_id)
        if current is None or incoming.version.key() > current.version.key():
            subscriptions[incoming.subscription_id] = incoming
    if update.entitlements is not None and (
        entitlements is None or update.entitlements.version.key() > entitlements.version.key()
    ):
        entitlements = update.entitlements
    tier, cause = _derive_tier(subscriptions, config)
    return CustomerState(
        customer_id=update.customer_id,
        tier=tier,
        tier_cause=cause,
        subscriptions=subscriptions,
        entitlements=entitlements,
    )
