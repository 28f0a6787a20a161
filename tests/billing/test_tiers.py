"""The tier reducer: order- and duplicate-independent, newest fact wins."""

from __future__ import annotations

import random
from functools import reduce
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from stripe_bridge.billing.tiers import (
    DEFAULT_TIERS,
    CustomerState,
    TierConfig,
    Update,
    apply,
    update_from_event,
)
from stripe_bridge.cli import main
from stripe_bridge.envelope import StripeEvent

from .sequences import (
    CONFIG,
    CUSTOMER,
    SUB_A,
    SUB_B,
    T0,
    checkout_event,
    deliveries,
    lifecycle,
    random_history,
    subscription_event,
)


def updates(events: list[dict[str, Any]]) -> list[Update]:
    """The projector's updates for ``events`` (events saying nothing are skipped)."""
    found = [update_from_event(StripeEvent.model_validate(e), CONFIG) for e in events]
    return [u for u in found if u is not None]


def fold(events: list[dict[str, Any]]) -> CustomerState | None:
    """The state after applying ``events`` in the order given."""
    state: CustomerState | None = None
    for update in updates(events):
        state = apply(state, update, CONFIG)
    return state


#: The subscription lifecycle as docs/billing.md orders it (same-second ties: later state wins).
LIFECYCLE = ["incomplete", "trialing", "active", "past_due", "unpaid", "canceled"]
PAYING = ("active", "trialing", "past_due")
TIER_ORDER = ["free", "pro", "teams"]


def _subscription_of(event: dict[str, Any]) -> str | None:
    obj = event["data"]["object"]
    if event["type"] == "checkout.session.completed":
        return str(obj["subscription"])
    return str(obj["id"]) if event["type"].startswith("customer.subscription.") else None


def _lifecycle(event: dict[str, Any]) -> int:
    return LIFECYCLE.index(event["data"]["object"]["status"])


def oracle(events: list[dict[str, Any]]) -> dict[str, Any]:
    """The expected state written straight from the documented rules, without the reducer.

    Per subscription: its latest subscription event if it has any, else its latest Checkout
    session. The customer's tier: the highest tier of a paying subscription. Entitlements:
    the latest summary. Duplicates collapse on the event id.
    """
    unique = list({e["id"]: e for e in events}.values())
    subscriptions: dict[str, tuple[str, str | None, bool, str]] = {}
    for sub_id in (SUB_A, SUB_B):
        about = [e for e in unique if _subscription_of(e) == sub_id]
        from_subscription = [e for e in about if e["type"] != "checkout.session.completed"]
        if from_subscription:
            last = max(from_subscription, key=lambda e: (e["created"], _lifecycle(e), e["id"]))
            obj = last["data"]["object"]
            keys = {item["price"]["lookup_key"] for item in obj["items"]["data"]}
            # Every fixture item's product is CONFIG's pro product; teams_monthly outranks it.
            tier = "teams" if "teams_monthly" in keys else "pro"
            subscriptions[sub_id] = (obj["status"], tier, obj["cancel_at_period_end"], last["id"])
        elif about:
            last = max(about, key=lambda e: (e["created"], e["id"]))
            obj = last["data"]["object"]
            status = "incomplete" if obj["payment_status"] == "unpaid" else "active"
            subscriptions[sub_id] = (status, obj["metadata"].get("tier"), False, last["id"])
    paying = [tier for status, tier, _, _ in subscriptions.values() if status in PAYING and tier]
    summaries = [
        e for e in unique if e["type"] == "entitlements.active_entitlement_summary.updated"
    ]
    latest = max(summaries, key=lambda e: (e["created"], e["id"]), default=None)
    return {
        "subscriptions": subscriptions,
        "tier": max(paying, key=TIER_ORDER.index, default="free"),
        "entitlements": None if latest is None else sorted(
            {item["lookup_key"] for item in latest["data"]["object"]["entitlements"]["data"]}
        ),
    }  # fmt: skip


def test_lifecycle_in_order_keeps_the_newest_state_of_each_subscription() -> None:
    state = fold(lifecycle())
    assert state is not None
    # SUB_B (pro, active, created later than the teams upgrade) still pays after SUB_A ended.
    assert state.tier == "pro"
    assert state.tier_cause is not None and state.tier_cause.event_id == "evt_b1"
    assert state.subscriptions[SUB_A].status == "canceled"
    assert state.subscriptions[SUB_A].cause.event_id == "evt_a7"
    assert state.entitlements is not None
    assert state.entitlements.lookup_keys == ["journeys", "seats"]


def test_same_second_ties_are_decided_by_lifecycle_state() -> None:
    created, checkout, active = lifecycle()[:3]
    for order in ([created, checkout, active], [active, checkout, created], [checkout, active]):
        state = fold(order)
        assert state is not None
        assert state.subscriptions[SUB_A].status == "active"
        assert state.subscriptions[SUB_A].cause.event_id == "evt_a3"
        assert state.tier == "pro"


@pytest.mark.parametrize("session_tier", [None, "pro", "teams"])
@pytest.mark.parametrize(
    ("status", "payment_status"), [("active", "paid"), ("trialing", "no_payment_required")]
)
@pytest.mark.parametrize("checkout_first", [False, True])
def test_a_later_checkout_never_overrides_the_subscription_event(
    session_tier: str | None, status: str, payment_status: str, checkout_first: bool
) -> None:
    # Stripe's normal flow: customer.subscription.created, then the session a second later.
    subscription = subscription_event(
        "evt_s1", "customer.subscription.created", T0, SUB_A, status, "pro_monthly", True
    )
    session = checkout_event("evt_c1", T0 + 1, SUB_A, session_tier, payment_status)
    order = [session, subscription] if checkout_first else [subscription, session]
    expected = fold([subscription])
    assert expected is not None
    for arrivals in (order, order + order, [order[0], *order]):
        state = fold(arrivals)
        assert state == expected
    record = expected.subscriptions[SUB_A]
    assert (record.status, record.tier, record.cancel_at_period_end) == (status, "pro", True)
    assert record.cause.event_id == "evt_s1"
    assert expected.tier == "pro"


@pytest.mark.parametrize(
    ("session_tier", "tier"), [("pro", "pro"), ("teams", "teams"), (None, "free")]
)
def test_checkout_alone_gives_a_provisional_tier(session_tier: str | None, tier: str) -> None:
    state = fold([checkout_event("evt_c1", T0 + 1, SUB_A, session_tier)])
    assert state is not None and state.tier == tier
    assert state.subscriptions[SUB_A].cause.event_type == "checkout.session.completed"
    assert state.subscriptions[SUB_A].status == "active"


def test_a_status_stripe_adds_later_still_outranks_checkout() -> None:
    future = subscription_event(
        "evt_s1", "customer.subscription.updated", T0, SUB_A, "some_new_status", "pro_monthly"
    )
    session = checkout_event("evt_c1", T0 + 1, SUB_A, "teams")
    for order in ([future, session], [session, future]):
        state = fold(order)
        assert state is not None
        assert state.subscriptions[SUB_A].status == "some_new_status"
        assert state.tier == "free"


def test_default_tiers_map_lookup_keys() -> None:
    sub = {"items": {"data": [{"price": {"id": "price_x", "lookup_key": "teams_yearly"}}]}}
    assert DEFAULT_TIERS.tier_for_subscription(sub) == "teams"
    named = {"items": {"data": [{"price": {"id": "p", "product": {"metadata": {"tier": "pro"}}}}]}}
    assert DEFAULT_TIERS.tier_for_subscription(named) == "pro"
    assert DEFAULT_TIERS.tier_for_subscription({"items": {"data": []}}) is None


def test_tier_config_rejects_duplicate_names() -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError):
        TierConfig.model_validate({"tiers": [{"name": "free"}, {"name": "free"}]})


@settings(max_examples=150, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), size=st.integers(1, 25))
def test_any_delivery_order_with_duplicates_matches_the_oracle(seed: int, size: int) -> None:
    rng = random.Random(seed)
    history = random_history(rng, size)
    expected = oracle(history)
    in_order = fold(history)
    shuffled = fold(deliveries(history, rng))
    assert shuffled == in_order
    assert shuffled is not None
    observed = {
        sub_id: (r.status, r.tier, r.cancel_at_period_end, r.cause.event_id)
        for sub_id, r in shuffled.subscriptions.items()
    }
    assert observed == expected["subscriptions"]
    assert shuffled.tier == expected["tier"]
    if shuffled.tier != CONFIG.default_tier:
        assert shuffled.tier_cause is not None
        causes = {
            c
            for status, tier, _, c in observed.values()
            if status in PAYING and tier == shuffled.tier
        }
        assert shuffled.tier_cause.event_id in causes
    lookup_keys = shuffled.entitlements.lookup_keys if shuffled.entitlements else None
    assert lookup_keys == expected["entitlements"]


def test_reapplying_any_update_changes_nothing() -> None:
    events = lifecycle()
    state = fold(events)
    assert state is not None
    for update in updates(events):
        assert apply(state, update, CONFIG) == state
    assert reduce(lambda s, u: apply(s, u, CONFIG), updates(events), state) == state
    assert state.customer_id == CUSTOMER


def test_bad_tier_file_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "tiers.yaml"
    bad.write_text("tiers: []\n")
    assert main(["project-tiers", "--tiers-file", str(bad)]) == 2
    assert "tier config" in capsys.readouterr().err
