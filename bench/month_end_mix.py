"""What a month-end burst sends: Stripe events of the real type mix, usage records, and
the lifecycle events OpenMeter must end up with.

The Stripe events are the stored real payloads (``stripe_bridge.ops.samples``), each with a
fresh event id and its own subscription or invoice id, so every event is about an object
no other event of the burst touches. That keeps the expected lifecycle output exact: it is
written here from docs/billing.md's table and first rule (a subscription's first event
starts it), not from the projector's code.
"""

from __future__ import annotations

import json
import random
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from stripe_bridge import registry
from stripe_bridge.ops.samples import sample_event

#: Month-end renewals: every renewed subscription rolls its period (``updated``) and pays
#: its invoice; some payments fail, some subscriptions end, new ones start. Weights, not
#: counts: the share of each type in the burst.
MIX: dict[str, int] = {
    "invoice.paid": 36,
    "customer.subscription.updated": 30,
    "customer.subscription.created": 8,
    "checkout.session.completed": 8,
    "invoice.payment_failed": 8,
    "customer.subscription.deleted": 6,
    "customer.subscription.trial_will_end": 4,
}
USAGE_METER = "tokens"


def services() -> list[str]:
    """The Knative Services the mix posts to."""
    served = {t.name: t.service_name for t in registry.EVENT_TYPES}
    return sorted(served[name] for name in MIX)


@dataclass(frozen=True)
class StripeDelivery:
    """One Stripe event for one function: its id, body and the lifecycle ids it implies."""

    service: str  # the Knative Service it is posted to
    function: str  # whose webhook secret signs it
    event_id: str
    body: bytes
    lifecycle: tuple[str, ...]


def lifecycle_ids(event: dict[str, Any]) -> tuple[str, ...]:
    """The lifecycle CloudEvent ids OpenMeter gets for ``event`` about a new object.

    docs/billing.md: a subscription's first lifecycle event is ``subscription.started``
    (an ``updated`` or ``deleted`` arriving first sends it before itself); Checkout starts
    subscription-mode sessions only.
    """
    kind, obj, event_id = event["type"], event["data"]["object"], event["id"]
    started = f"sub.{obj['id']}.subscription.started"
    if kind == "customer.subscription.created":
        return (started,)
    if kind == "customer.subscription.updated":
        return started, f"{event_id}.subscription.updated"
    if kind == "customer.subscription.deleted":
        return started, f"sub.{obj['id']}.subscription.ended"
    if kind == "invoice.paid":
        return (f"inv.{obj['id']}.payment.success",)
    if kind == "invoice.payment_failed":
        return (f"{event_id}.payment.failed",)
    if kind == "checkout.session.completed" and obj.get("mode") == "subscription":
        return (f"sub.{obj['subscription']}.subscription.started",)
    return ()


class StripeEvents:
    """Stripe events of ``MIX``, made one at a time (a 100,000-event burst never sits in memory)."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.samples = {name: sample_event(name) for name in MIX}
        self.served = {t.name: t for t in registry.EVENT_TYPES}
        self.types = list(MIX)
        self.weights = list(MIX.values())

    def next(self) -> StripeDelivery:
        """A fresh event of a type drawn from the mix, about an object of its own."""
        kind = self.rng.choices(self.types, self.weights)[0]
        sample = self.samples[kind]
        tag = secrets.token_hex(8)
        obj = dict(sample["data"]["object"])
        if kind.startswith("customer.subscription."):
            obj["id"] = f"sub_mb{tag}"
        elif kind.startswith("invoice."):
            obj["id"] = f"in_mb{tag}"
        elif kind == "checkout.session.completed":
            obj["id"] = f"cs_mb{tag}"
        event = {**sample, "id": f"evt_mb{tag}", "created": int(time.time())}
        event["data"] = {**sample["data"], "object": obj}
        served = self.served[kind]
        body = json.dumps(event).encode()
        return StripeDelivery(
            served.service_name, served.function_name, event["id"], body, lifecycle_ids(event)
        )


def usage_batch(run: str, first: int, count: int) -> tuple[list[str], bytes]:
    """Usage records ``first`` .. ``first + count - 1`` of run ``run``: their ids and body."""
    ids = [f"u-{run}-{n}" for n in range(first, first + count)]
    records = [
        {"meter": USAGE_METER, "customer_id": f"cus_mb{n % 97}", "value": n % 1000 + 1, "id": i}
        for n, i in zip(range(first, first + count), ids, strict=True)
    ]
    return ids, json.dumps(records).encode()


def schedule(events: int, batches: int, rate: float) -> Iterator[tuple[float, int]]:
    """(seconds from the start, what), in time order: ``events`` Stripe events (what = -1)
    at ``rate`` per second and ``batches`` usage batches (what = batch index) spread evenly
    over the same time.
    """
    span = events / rate
    every = span / batches if batches else 0.0
    e = b = 0
    while e < events or b < batches:
        next_event = e / rate if e < events else float("inf")
        next_batch = b * every if b < batches else float("inf")
        if next_event <= next_batch:
            yield next_event, -1
            e += 1
        else:
            yield next_batch, b
            b += 1
