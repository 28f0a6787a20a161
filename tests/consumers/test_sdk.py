"""The consumer SDK parses what message.build_message writes, and orders per object."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from pydantic import ValidationError
from stripe_bridge import registry
from stripe_bridge.envelope import StripeEvent
from stripe_bridge.message import build_message
from stripe_bridge_events import (
    MODELS,
    InvoiceChanged,
    LatestApplied,
    SubscriptionChanged,
    TypedEvent,
    Untranslated,
    UntranslatedEvent,
    object_key,
    parse,
    position,
)
from stripe_bridge_testing.deliveries import FIXTURES, fixture_event

from .conftest import broken_invoice


def body_of(event: dict[str, Any]) -> bytes:
    return build_message(StripeEvent.model_validate(event), event, "stripe").body


def test_the_sdk_knows_every_registered_model_and_no_other() -> None:
    assert set(MODELS.values()) == {t.model for t in registry.EVENT_TYPES}


@pytest.mark.parametrize("name", sorted(p.stem for p in FIXTURES.glob("*.json")))
def test_every_fixture_parses_to_what_the_bridge_translated(name: str) -> None:
    raw = fixture_event(name)
    event = parse(body_of(raw))
    assert event.id == raw["id"] and event.stripe == raw
    assert event.stripe_type == raw["type"] and event.created == raw["created"]
    spec = registry.lookup(raw["type"])
    if spec is None:
        assert isinstance(event, UntranslatedEvent)
        assert event.reason is Untranslated.NOT_TRANSLATED
        assert event.dataschema == "urn:stripe-bridge:data:untranslated.v1"
    else:
        assert isinstance(event, TypedEvent)
        assert event.translation == spec.translate(StripeEvent.model_validate(raw))
        # Dumping gives the concrete model's fields back, not the base class's none.
        assert (
            event.model_dump(mode="json")["translation"]
            == json.loads(body_of(raw))["data"]["translation"]
        )


def test_subscription_v1_messages_stored_before_unit_amount_still_parse() -> None:
    # Item unit_amount and currency were added to subscription.v1 (issue #18, additive):
    # messages already in the stream, written without them, must parse as before.
    body = json.loads(body_of(fixture_event("subscription_updated")))
    for item in body["data"]["translation"]["items"]:
        del item["unit_amount"], item["currency"]
    event = parse(json.dumps(body).encode())
    assert isinstance(event, TypedEvent)
    assert isinstance(event.translation, SubscriptionChanged)
    (item,) = event.translation.items
    assert (item.unit_amount, item.currency, item.price_id) == (
        None,
        None,
        "price_1IDQm5JDPojXS6LNM31hxKzp",
    )


def test_a_failed_translation_parses_untranslated_with_its_reason() -> None:
    event = parse(body_of(broken_invoice()))
    assert isinstance(event, UntranslatedEvent)
    assert event.reason is Untranslated.TRANSLATION_FAILED
    assert event.translationerror is not None and "currency" in event.translationerror


def test_a_schema_this_sdk_does_not_know_keeps_the_translation_as_json() -> None:
    cloudevent = json.loads(body_of(fixture_event("invoice_paid")))
    cloudevent["dataschema"] = "urn:stripe-bridge:schema:invoice.v2"
    event = parse(cloudevent)
    assert isinstance(event, UntranslatedEvent)
    assert event.reason is Untranslated.UNKNOWN_SCHEMA
    assert event.translation_data == cloudevent["data"]["translation"]


@pytest.mark.parametrize("name", sorted(p.stem for p in FIXTURES.glob("*.json")))
def test_format_1_messages_parse_as_before(name: str) -> None:
    """Before #18 ``dataschema`` named the translation's schema, or was absent: still read."""
    raw = fixture_event(name)
    current = json.loads(body_of(raw))
    old = copy.deepcopy(current)
    spec = registry.lookup(raw["type"])
    if spec is None:
        del old["dataschema"]
    else:
        old["dataschema"] = f"urn:stripe-bridge:schema:{spec.model.SCHEMA}"
    then, now = parse(old), parse(current)
    assert type(then) is type(now)
    assert then.model_dump(exclude={"dataschema"}) == now.model_dump(exclude={"dataschema"})
    assert then.translation_schema == now.translation_schema
    assert object_key(then) == object_key(now)  # ordering state kept across the upgrade


@pytest.mark.parametrize(
    "body", [b"[]", b"not json", b'{"specversion": "1.0", "data": {}}', b'{"data": {"stripe": {}}}']
)
def test_what_is_no_bridge_cloudevent_raises_value_error(body: bytes) -> None:
    with pytest.raises(ValueError):
        parse(body)


def test_a_translation_that_breaks_its_schema_is_refused() -> None:
    cloudevent = json.loads(body_of(fixture_event("invoice_paid")))
    del cloudevent["data"]["translation"]["amount_paid"]
    with pytest.raises(ValidationError, match="amount_paid"):
        parse(cloudevent)


def typed(name: str, **changes: Any) -> TypedEvent:
    raw = copy.deepcopy(fixture_event(name))
    raw.update({k: v for k, v in changes.items() if k in ("id", "created")})
    obj = raw["data"]["object"]
    obj.update({k: v for k, v in changes.items() if k not in ("id", "created", "id_override")})
    if "id_override" in changes:
        obj["id"] = changes["id_override"]
    event = parse(body_of(raw))
    assert isinstance(event, TypedEvent)
    return event


def offer(guard: LatestApplied, event: TypedEvent | UntranslatedEvent) -> bool:
    """Apply ``event`` (record it) unless it is stale; whether it was applied."""
    if guard.stale(event):
        return False
    guard.record(event)
    return True


def test_an_older_event_of_the_same_object_is_skipped_and_a_redelivery_too() -> None:
    guard = LatestApplied()
    newer = typed("subscription_updated", id="evt_new", created=2000)
    older = typed("subscription_deleted", id="evt_old", created=1000, id_override=newer.subject)
    assert older.subject == newer.subject
    assert offer(guard, newer)
    assert not offer(guard, older)  # delivered late: applying it would undo the newer state
    assert not offer(guard, newer)  # the same event again
    assert offer(guard, typed("subscription_updated", id="evt_newest", created=2001))


def test_version_fields_order_events_of_the_same_second() -> None:
    failed = typed("invoice_payment_failed", id="evt_failed", created=5, attempt_count=1)
    retried = typed("invoice_payment_failed", id="evt_retry", created=5, attempt_count=2)
    assert failed.subject == retried.subject
    paid = typed(
        "invoice_paid",
        id="evt_paid",
        created=5,
        attempt_count=2,
        amount_paid=1500,
        id_override=failed.subject,
    )
    assert position(failed) < position(retried)
    assert isinstance(retried.translation, InvoiceChanged)
    guard = LatestApplied()
    assert offer(guard, retried)
    assert not offer(guard, failed)
    # Same second, same attempt: the payment adds to amount_paid, the failure does not.
    assert offer(guard, paid)
    assert not offer(guard, retried)


def test_objects_and_schemas_are_ordered_apart() -> None:
    guard = LatestApplied()
    assert offer(guard, typed("subscription_updated", id="evt_a", created=9))
    other = typed("subscription_updated", id="evt_b", created=1, id_override="sub_other")
    assert isinstance(other.translation, SubscriptionChanged)
    assert other.subject == "sub_other"
    assert offer(guard, other)  # older, but of another subscription
    # A later customer.updated of the summary's customer never hides the summary.
    summary = parse(body_of(fixture_event("active_entitlement_summary_updated")))
    customer = copy.deepcopy(fixture_event("customer_updated"))
    customer["data"]["object"]["id"] = summary.subject
    customer["created"] = summary.created + 100
    assert offer(guard, parse(body_of(customer)))
    assert offer(guard, summary)
