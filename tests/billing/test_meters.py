"""openmeter/meters.json: an OpenMeter meter for every event type this project sends.

Validated against OpenMeter's MeterCreate schema, vendored as a fragment with its source
(openmeterio/openmeter 7e57a394, ``api/openapi.cloud.yaml``) in
openmeter_meter_create.schema.json.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator, FormatChecker
from pydantic import ValidationError
from stripe_bridge.billing.lifecycle import Lifecycle, decide, fact_from_event
from stripe_bridge.billing.limits import DEFAULT_METERS
from stripe_bridge.billing.meters import METERS_FILE, meter_definitions
from stripe_bridge.billing.tiers import DEFAULT_TIERS, TierConfig
from stripe_bridge.billing.usage import UsageRecord
from stripe_bridge.envelope import StripeEvent
from stripe_bridge_testing.deliveries import fixture_event
from stripe_bridge_testing.openmeter_standin import validate_event

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = json.loads((Path(__file__).parent / "openmeter_meter_create.schema.json").read_text())
VALIDATOR = Draft202012Validator(SCHEMA, format_checker=FormatChecker())


def shipped() -> list[dict[str, Any]]:
    definitions: list[dict[str, Any]] = json.loads((ROOT / METERS_FILE).read_text())
    return definitions


def test_the_shipped_file_is_what_the_code_defines() -> None:
    assert shipped() == meter_definitions()


@pytest.mark.parametrize("meter", meter_definitions(), ids=lambda m: m["slug"])
def test_every_meter_is_a_valid_meter_create(meter: dict[str, Any]) -> None:
    assert [e.message for e in VALIDATOR.iter_errors(meter)] == []
    # The schema lets unknown keys through; OpenMeter would ignore them silently.
    assert meter.keys() <= SCHEMA["properties"].keys()


def test_the_schema_refuses_what_openmeter_refuses() -> None:
    """The vendored fragment is live: a bad slug, aggregation or a missing field fail."""
    good = meter_definitions()[0]
    for bad in (
        {**good, "slug": "api-calls"},
        {**good, "slug": "Tokens"},
        {**good, "aggregation": "TOTAL"},
        {k: v for k, v in good.items() if k != "eventType"},
    ):
        assert not VALIDATOR.is_valid(bad), bad


def test_every_emitted_event_type_has_one_meter() -> None:
    types = [m["eventType"] for m in meter_definitions()]
    assert sorted(types) == sorted([*DEFAULT_METERS, *(kind.value for kind in Lifecycle)])
    slugs = [m["slug"] for m in meter_definitions()]
    assert len(set(slugs)) == len(slugs)


def test_usage_meters_read_what_usage_events_carry() -> None:
    for meter in meter_definitions()[: len(DEFAULT_METERS)]:
        record = UsageRecord(
            meter=meter["slug"], customer_id="cus_1", value=3, session_id="s", agent_id="a"
        )
        data = record.cloudevent()["data"]
        paths = [meter["valueProperty"], *meter["groupBy"].values()]
        assert {path.removeprefix("$.") for path in paths} <= data.keys()


@pytest.mark.parametrize("meter", ["api-calls", "Tokens", "tokens__total", "a.b"])
def test_a_tier_file_meter_must_be_an_openmeter_slug(meter: str) -> None:
    """A tier limiting a meter no usage record can carry would never count anything."""
    config = DEFAULT_TIERS.model_dump(mode="json")
    config["meters"] = {**config["meters"], meter: "day"}
    with pytest.raises(ValidationError, match="meters"):
        TierConfig.model_validate(config)


@pytest.mark.parametrize(
    "fixture",
    ["subscription_created", "subscription_updated_basil", "subscription_deleted",
     "invoice_paid", "invoice_paid_basil", "invoice_payment_failed"],
)  # fmt: skip
def test_lifecycle_meters_read_what_real_lifecycle_events_carry(fixture: str) -> None:
    """From real Stripe payloads: each lifecycle event is a valid OpenMeter Event and
    carries every key its meter groups by."""
    meters = {m["eventType"]: m for m in meter_definitions()}
    fact = fact_from_event(StripeEvent.model_validate(fixture_event(fixture)))
    assert fact is not None
    _, events = decide(None, fact)
    assert events
    for sent in events:
        cloudevent = sent.cloudevent()
        assert validate_event(cloudevent) is None
        group_by = meters[cloudevent["type"]]["groupBy"].values()
        assert {path.removeprefix("$.") for path in group_by} <= cloudevent["data"].keys()
