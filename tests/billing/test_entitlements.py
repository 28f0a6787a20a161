"""entitlements.py alone: the function's settings and its request bodies (no NATS).

What it decides against real KV buckets is in tests/billing/test_limits.py and
tests/entitlements/.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError
from stripe_bridge.billing.entitlements import CheckRequest, EntitlementSettings, ReleaseRequest
from stripe_bridge.config import ConfigError, load_model


def test_settings_are_the_entitlements_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ENTITLEMENTS_RESERVATION_TTL", "60")
    monkeypatch.setenv("entitlements_nats_timeout", "0.25")
    monkeypatch.setenv("RESERVATION_TTL", "1")  # not the function's
    own = load_model(EntitlementSettings)
    assert (own.reservation_ttl, own.nats_timeout, own.tiers_file) == (60, 0.25, None)


def test_the_shared_tier_file_variable_wins_over_the_own_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # BILLING_TIERS_FILE is what the projector and checkout read too: one file for all.
    monkeypatch.setenv("ENTITLEMENTS_TIERS_FILE", "/own.yaml")
    assert load_model(EntitlementSettings).tiers_file == Path("/own.yaml")
    monkeypatch.setenv("BILLING_TIERS_FILE", "/shared.yaml")
    assert load_model(EntitlementSettings).tiers_file == Path("/shared.yaml")


def test_a_bad_setting_names_its_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ENTITLEMENTS_UNAVAILABLE_AFTER", "-1")
    with pytest.raises(
        ConfigError, match=r"^invalid configuration: ENTITLEMENTS_UNAVAILABLE_AFTER:"
    ):
        load_model(EntitlementSettings)


def test_check_and_release_bodies_refuse_what_they_cannot_key() -> None:
    check = CheckRequest.model_validate({"customer": "cus_1", "meter": "tokens"})
    assert (check.quantity, check.reserve, check.reservation_id) == (1, False, None)
    for bad in (
        {"customer": "", "meter": "tokens"},
        {"customer": "cus_1", "meter": "a.b"},  # a KV key token
        {"customer": "cus_1", "meter": "tokens", "quantity": -1},
        {"customer": "cus_1", "meter": "tokens", "quantity": float("nan")},
        {"customer": "cus_1", "meter": "tokens", "extra": 1},
    ):
        with pytest.raises(ValidationError):
            CheckRequest.model_validate(bad)
    with pytest.raises(ValidationError):
        ReleaseRequest.model_validate({"customer": "cus_1", "meter": "tokens"})
    with pytest.raises(ValidationError):
        ReleaseRequest.model_validate(
            {"customer": "cus_1", "meter": "tokens", "reservation_id": "a b"}
        )
