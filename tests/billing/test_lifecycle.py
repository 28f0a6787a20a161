"""The lifecycle gate: the seven mappings, and a downstream order that survives Stripe's."""

from __future__ import annotations

import random
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from stripe_bridge.billing.lifecycle import (
    Gate,
    Lifecycle,
    LifecycleEvent,
    decide,
    fact_from_event,
)
from stripe_bridge.envelope import StripeEvent
from stripe_bridge_testing.deliveries import fixture_event

from .lifecycle_oracle import INV_A, check_downstream, invoice_event, random_billing_history
from .sequences import CUSTOMER, SUB_A, T0, checkout_event, deliveries, subscription_event


def send(events: list[dict[str, Any]]) -> list[LifecycleEvent]:
    """Every lifecycle event the gates let through for ``events``, in arrival order."""
    gates: dict[str, Gate] = {}
    out: list[LifecycleEvent] = []
    for raw in events:
        fact = fact_from_event(StripeEvent.model_validate(raw))
        if fact is None:
            continue
        gates[fact.gate], emitted = decide(gates.get(fact.gate), fact)
        out += emitted
    return out


def downstream(sent: list[LifecycleEvent]) -> list[str]:
    """What OpenMeter keeps: the first of each id (it deduplicates on id + source)."""
    first: dict[str, LifecycleEvent] = {}
    for event in sent:
        # A repeat carries exactly what the first did, so dropping it loses nothing.
        assert first.setdefault(event.id, event) == event
    return list(first)


def test_the_seven_mappings_from_real_payloads() -> None:
    cases = {
        "checkout_session_completed": Lifecycle.STARTED,
        "subscription_created": Lifecycle.STARTED,
        "subscription_updated": Lifecycle.UPDATED,
        "subscription_updated_basil": Lifecycle.UPDATED,
        "subscription_deleted": Lifecycle.ENDED,
        "invoice_paid": Lifecycle.PAYMENT_SUCCESS,
        "invoice_paid_basil": Lifecycle.PAYMENT_SUCCESS,
        "invoice_payment_succeeded": Lifecycle.PAYMENT_SUCCESS,
        "invoice_payment_failed": Lifecycle.PAYMENT_FAILED,
    }
    for name, kind in cases.items():
        raw = fixture_event(name)
        if name == "checkout_session_completed":
            raw = checkout_event("evt_c1", T0, SUB_A, "pro")
        fact = fact_from_event(StripeEvent.model_validate(raw))
        assert fact is not None and fact.kind is kind, name
        _, events = decide(None, fact)
        assert events[-1].type is kind
        assert {e.subject for e in events} == {raw["data"]["object"]["customer"]}
        data = events[-1].cloudevent()["data"]
        assert data["stripe_event_id"] == raw["id"]
        assert data.get("currency")
        if kind in (Lifecycle.PAYMENT_SUCCESS, Lifecycle.PAYMENT_FAILED):
            assert data["invoice_id"] and data["subscription_id"]
            assert data["period_start"] and data["period_end"] and "amount_paid" in data
        elif name != "checkout_session_completed":
            assert data["price_id"] and data["period_start"] and data["period_end"]
            assert data["amount"] is not None


def test_other_events_and_one_time_checkouts_send_nothing() -> None:
    session = fixture_event("checkout_session_completed")  # payment mode, no subscription
    for raw in (session, fixture_event("charge_succeeded"), fixture_event("customer_updated")):
        assert fact_from_event(StripeEvent.model_validate(raw)) is None


def test_a_late_update_after_the_end_is_dropped() -> None:
    up = "customer.subscription.updated"
    events = [
        subscription_event("evt_1", "customer.subscription.created", T0, SUB_A, "active"),
        subscription_event("evt_3", "customer.subscription.deleted", T0 + 60, SUB_A, "canceled"),
        subscription_event("evt_2", up, T0 + 30, SUB_A, "past_due"),
    ]
    assert downstream(send(events)) == [
        f"sub.{SUB_A}.subscription.started",
        f"sub.{SUB_A}.subscription.ended",
    ]


def test_an_update_first_starts_the_subscription_and_a_later_created_adds_nothing() -> None:
    created = subscription_event("evt_1", "customer.subscription.created", T0, SUB_A, "incomplete")
    updated = subscription_event("evt_2", "customer.subscription.updated", T0, SUB_A, "active")
    session = checkout_event("evt_3", T0 + 1, SUB_A, "pro")
    expected = [f"sub.{SUB_A}.subscription.started", "evt_2.subscription.updated"]
    for order in ([created, updated, session], [session, updated, created], [updated, created]):
        assert downstream(send(order)) == expected


def test_no_failure_after_the_payment_succeeded() -> None:
    failed = invoice_event("evt_f1", "invoice.payment_failed", T0, INV_A)
    paid = invoice_event("evt_p1", "invoice.paid", T0 + 3600, INV_A)
    assert downstream(send([paid, failed, paid])) == [f"inv.{INV_A}.payment.success"]
    assert downstream(send([failed, paid])) == [
        "evt_f1.payment.failed",
        f"inv.{INV_A}.payment.success",
    ]


def test_a_redelivery_sends_the_same_ids_again() -> None:
    updated = subscription_event("evt_2", "customer.subscription.updated", T0, SUB_A, "active")
    fact = fact_from_event(StripeEvent.model_validate(updated))
    assert fact is not None
    gate, first = decide(None, fact)
    # The gate was written, the publish was lost: the redelivery finds the decision.
    again, second = decide(gate, fact)
    assert again == gate and second == first and len(first) == 2
    assert {e.subject for e in first} == {CUSTOMER}


@settings(max_examples=200, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), size=st.integers(1, 30))
def test_any_delivery_order_with_duplicates_keeps_the_rule(seed: int, size: int) -> None:
    rng = random.Random(seed)
    history = random_billing_history(rng, size)
    check_downstream(history, downstream(send(deliveries(history, rng))))
    # In creation order, nothing is dropped but repeats, stale updates and what follows an end.
    check_downstream(history, downstream(send(history)))
