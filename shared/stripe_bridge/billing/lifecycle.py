"""OpenMeter lifecycle events from the seven billing events, in an order downstream can trust.

Mapping (the system this project replaces, issue #11)::

    checkout.session.completed (subscription mode)  -> subscription.started
    customer.subscription.created                   -> subscription.started
    customer.subscription.updated                   -> subscription.updated
    customer.subscription.deleted                   -> subscription.ended
    invoice.paid                                    -> payment.success
    invoice.payment_succeeded                       -> payment.success
    invoice.payment_failed                          -> payment.failed

Accounts on older API versions (and many integrations) subscribe to
``invoice.payment_succeeded`` rather than ``invoice.paid``; Stripe sends both for a paid
invoice, and the invoice's gate sends ``payment.success`` once for whichever comes first.
Every payload era is read (translations.py): plan-only items and lines, invoices without
``amount_paid``, basil's moved fields; only what the event's data needs is required.

Stripe delivers out of order and more than once, so what is sent is decided by a *gate*
per subscription (and per invoice), kept in a KV bucket and changed only forwards:

- a subscription's first lifecycle event is always ``subscription.started``, exactly once
  (whichever of its facts arrives first starts it; a later Checkout or ``created`` adds
  nothing);
- ``subscription.updated`` is sent only if newer than every update sent before
  (``tiers.Version``: subscription events above Checkout, then ``created``, status rank,
  event id); an older one arriving late is dropped, never sent after a newer one;
- ``subscription.ended`` is sent at most once and is the last: nothing about that
  subscription is sent after it, however late it arrives;
- per invoice, ``payment.success`` at most once, and no ``payment.failed`` after it;
  failures in version order as updates are.

A redelivered event the gate already let through is sent again with the same CloudEvent
ids (``decisions``), so a crash between the gate's write and the publish loses nothing and
OpenMeter (and the USAGE stream's ``Nats-Msg-Id`` window) drops the repeat.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from ..envelope import StripeEvent
from ..translations import translate_checkout_session, translate_invoice, translate_subscription
from .tiers import CHECKOUT_RANK, STATUS_RANK, Version

#: CloudEvents ``source`` of lifecycle events (OpenMeter deduplicates on id + source).
LIFECYCLE_SOURCE = "stripe-bridge/lifecycle"
#: Emitted decisions remembered per gate for redeliveries; older ones are stale by then.
MAX_DECISIONS = 50


class Lifecycle(StrEnum):
    """The OpenMeter lifecycle event types."""

    STARTED = "subscription.started"
    UPDATED = "subscription.updated"
    ENDED = "subscription.ended"
    PAYMENT_SUCCESS = "payment.success"
    PAYMENT_FAILED = "payment.failed"


#: Which lifecycle event each Stripe event type maps onto.
MAPPING: dict[str, Lifecycle] = {
    "checkout.session.completed": Lifecycle.STARTED,
    "customer.subscription.created": Lifecycle.STARTED,
    "customer.subscription.updated": Lifecycle.UPDATED,
    "customer.subscription.deleted": Lifecycle.ENDED,
    "invoice.paid": Lifecycle.PAYMENT_SUCCESS,
    "invoice.payment_succeeded": Lifecycle.PAYMENT_SUCCESS,
    "invoice.payment_failed": Lifecycle.PAYMENT_FAILED,
}


class Fact(BaseModel):
    """What one Stripe event says for the lifecycle: its kind, gate key, customer and data."""

    model_config = ConfigDict(frozen=True)

    kind: Lifecycle
    gate: str
    customer_id: str
    event_id: str
    created: int
    version: Version
    data: dict[str, Any]


class LifecycleEvent(BaseModel):
    """One CloudEvent for OpenMeter."""

    model_config = ConfigDict(frozen=True)

    id: str
    type: Lifecycle
    subject: str
    time: int
    data: dict[str, Any]

    def cloudevent(self) -> dict[str, Any]:
        """The structured CloudEvent (JSON form) OpenMeter ingests."""
        from datetime import UTC, datetime

        return {
            "specversion": "1.0",
            "id": self.id,
            "source": LIFECYCLE_SOURCE,
            "type": self.type.value,
            "subject": self.subject,
            "time": datetime.fromtimestamp(self.time, tz=UTC).isoformat(),
            "datacontenttype": "application/json",
            "data": self.data,
        }


class Gate(BaseModel):
    """What was sent so far for one subscription or invoice (the KV value)."""

    model_config = ConfigDict(frozen=True)

    started: bool = False
    ended: bool = False
    paid: bool = False
    #: Version of the newest update/failure (or of the start) sent.
    last: Version | None = None
    #: Stripe event id -> the lifecycle types it let through, for redeliveries.
    decisions: dict[str, list[Lifecycle]] = Field(default_factory=dict)


def _customer(value: Any) -> str | None:
    found = value.get("id") if isinstance(value, dict) else value
    return found if isinstance(found, str) and found else None


def _subscription_data(event: StripeEvent) -> dict[str, Any]:
    sub = translate_subscription(event)
    first = sub.items[0] if sub.items else None
    return {
        "subscription_id": sub.subscription_id,
        "status": sub.status,
        "plan": first.lookup_key if first else None,
        "price_id": first.price_id if first else None,
        "product_id": first.product_id if first else None,
        "quantity": first.quantity if first else None,
        "amount": first.unit_amount if first else None,
        "currency": event.data.object.get("currency") or (first.currency if first else None),
        "period_start": sub.current_period_start,
        "period_end": sub.current_period_end,
        "cancel_at_period_end": sub.cancel_at_period_end,
    }


def _invoice_data(event: StripeEvent) -> dict[str, Any]:
    invoice = translate_invoice(event)
    first = invoice.lines[0] if invoice.lines else None
    return {
        "invoice_id": invoice.invoice_id,
        "subscription_id": invoice.subscription_id,
        "amount_due": invoice.amount_due,
        "amount_paid": invoice.amount_paid,
        "currency": invoice.currency,
        "price_id": first.price_id if first else None,
        "period_start": first.period_start if first else invoice.period_start,
        "period_end": first.period_end if first else invoice.period_end,
        "attempt_count": invoice.attempt_count,
        "billing_reason": invoice.billing_reason,
    }


def fact_from_event(event: StripeEvent) -> Fact | None:
    """The lifecycle fact of ``event``; None if it has none (other type, no customer...)."""
    kind = MAPPING.get(event.type)
    obj = event.data.object
    customer = _customer(obj.get("customer"))
    if kind is None or customer is None:
        return None
    if event.type == "checkout.session.completed":
        session = translate_checkout_session(event)
        if session.mode != "subscription" or session.subscription_id is None:
            return None
        gate = f"sub.{session.subscription_id}"
        rank = CHECKOUT_RANK
        data: dict[str, Any] = {
            "subscription_id": session.subscription_id,
            "checkout_session_id": session.session_id,
            "plan": session.metadata.get("tier"),
            "amount": session.amount_total,
            "currency": session.currency,
        }
    elif kind in (Lifecycle.PAYMENT_SUCCESS, Lifecycle.PAYMENT_FAILED):
        data = _invoice_data(event)
        gate, rank = f"inv.{data['invoice_id']}", 1
    else:
        data = _subscription_data(event)
        gate = f"sub.{data['subscription_id']}"
        # A status Stripe adds later still outranks Checkout (as in the tier projector).
        rank = STATUS_RANK.get(str(data["status"]), STATUS_RANK["incomplete"])
    data = {**data, "stripe_event_id": event.id, "stripe_event_type": event.type}
    return Fact(
        kind=kind,
        gate=gate,
        customer_id=customer,
        event_id=event.id,
        created=event.created,
        version=Version(created=event.created, rank=rank, event_id=event.id),
        data=data,
    )


def _event_id(fact: Fact, kind: Lifecycle) -> str:
    """Once-per-gate events get an id of their gate, so two sources of them collapse."""
    if kind in (Lifecycle.STARTED, Lifecycle.ENDED, Lifecycle.PAYMENT_SUCCESS):
        return f"{fact.gate}.{kind.value}"
    return f"{fact.event_id}.{kind.value}"


def events_for(fact: Fact, kinds: list[Lifecycle]) -> list[LifecycleEvent]:
    """The CloudEvents of ``kinds``, built from ``fact`` (the same every time)."""
    return [
        LifecycleEvent(
            id=_event_id(fact, kind),
            type=kind,
            subject=fact.customer_id,
            time=fact.created,
            data=fact.data,
        )
        for kind in kinds
    ]


def _newer(fact: Fact, gate: Gate) -> bool:
    return gate.last is None or fact.version.key() > gate.last.key()


def _kinds(gate: Gate, fact: Fact) -> tuple[list[Lifecycle], dict[str, Any]]:
    """What ``fact`` lets through given ``gate``, and the gate's changed fields."""
    kind = fact.kind
    if kind is Lifecycle.PAYMENT_SUCCESS:
        return ([kind], {"paid": True}) if not gate.paid else ([], {})
    if kind is Lifecycle.PAYMENT_FAILED:
        if gate.paid or not _newer(fact, gate):
            return [], {}
        return [kind], {"last": fact.version}
    if gate.ended:
        return [], {}
    kinds = [] if gate.started else [Lifecycle.STARTED]
    changes: dict[str, Any] = {"started": True}
    if kind is Lifecycle.ENDED:
        kinds.append(kind)
        changes["ended"] = True
    elif kind is Lifecycle.UPDATED and _newer(fact, gate):
        kinds.append(kind)
    if kinds and kind is not Lifecycle.ENDED and _newer(fact, gate):
        changes["last"] = fact.version
    return kinds, changes if kinds else {}


def decide(gate: Gate | None, fact: Fact) -> tuple[Gate, list[LifecycleEvent]]:
    """The gate after ``fact`` and the lifecycle events to send for it (maybe none)."""
    current = gate or Gate()
    if fact.event_id in current.decisions:
        return current, events_for(fact, current.decisions[fact.event_id])
    kinds, changes = _kinds(current, fact)
    if not kinds:
        return current, []
    decisions = {**current.decisions, fact.event_id: kinds}
    while len(decisions) > MAX_DECISIONS:
        decisions.pop(next(iter(decisions)))
    return current.model_copy(update={**changes, "decisions": decisions}), events_for(fact, kinds)
