"""The tier reducer: order- and duplicate-independent, newest fact wins."""

from __future__ import annotations

import random
from functools import reduce
from typing import Any

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
from stripe_bridge.envelope import StripeEvent

from .sequences import (
    CONFIG,
    CUSTOMER,
    SUB_A,
    SUB_B,
    deliveries,
    lifecycle,
    random_history,
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


def newest(events: list[dict[str, Any]]) -> dict[str, Any]:
    """Expected facts computed straight from the events: the max-version one per key."""
    by_key: dict[str, Update] = {}
    for update in updates(events):
        if update.subscription is not None:
            key, version = update.subscription.subscription_id, update.subscription.version
        else:
            assert update.entitlements is not None
            key, version = "entitlements", update.entitlements.version
        held = by_key.get(key)
        held_version = (
            held.subscription.version if held and held.subscription
            else held.entitlements.version if held and held.entitlements else None
        )  # fmt: skip
        if held_version is None or version.key() > held_version.key():
            by_key[key] = update
    return {
        key: (u.subscription if u.subscription is not None else u.entitlements)
        for key, u in by_key.items()
    }


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


def test_checkout_alone_grants_the_tier_it_sold() -> None:
    state = fold([lifecycle()[1]])
    assert state is not None and state.tier == "pro"
    assert state.tier_cause is not None
    assert state.tier_cause.event_type == "checkout.session.completed"


def test_default_tiers_map_lookup_keys() -> None:
    sub = {"items": {"data": [{"price": {"id": "price_x", "lookup_key": "teams_yearly"}}]}}
    assert DEFAULT_TIERS.tier_for_subscription(sub) == "teams"
    named = {"items": {"data": [{"price": {"id": "p", "product": {"metadata": {"tier": "pro"}}}}]}}
    assert DEFAULT_TIERS.tier_for_subscription(named) == "pro"
    assert DEFAULT_TIERS.tier_for_subscription({"items": {"data": []}}) is None


def test_tier_config_rejects_duplicate_names() -> None:
    import pytest
    from pydantic import ValidationError

    with pytest.raises(ValidationError):
        TierConfig.model_validate({"tiers": [{"name": "free"}, {"name": "free"}]})


@settings(max_examples=150, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), size=st.integers(1, 25))
def test_any_delivery_order_with_duplicates_gives_the_newest_state(seed: int, size: int) -> None:
    rng = random.Random(seed)
    history = random_history(rng, size)
    expected = newest(history)
    in_order = fold(history)
    shuffled = fold(deliveries(history, rng))
    assert shuffled == in_order
    assert shuffled is not None
    for sub_id in (SUB_A, SUB_B):
        assert shuffled.subscriptions.get(sub_id) == expected.get(sub_id)
    assert shuffled.entitlements == expected.get("entitlements")
    paying = [
        s for s in shuffled.subscriptions.values()
        if s.status in CONFIG.paying_statuses and s.tier
    ]  # fmt: skip
    best = max((CONFIG.rank(s.tier or "") for s in paying), default=0)
    assert CONFIG.rank(shuffled.tier) == best


def test_reapplying_any_update_changes_nothing() -> None:
    events = lifecycle()
    state = fold(events)
    assert state is not None
    for update in updates(events):
        assert apply(state, update, CONFIG) == state
    assert reduce(lambda s, u: apply(s, u, CONFIG), updates(events), state) == state
    assert state.customer_id == CUSTOMER
