"""The published message, written without the CloudEvents SDK, is what the SDK reads and writes.

message.build_message writes the structured JSON itself and puts a webhook's body into
``data.stripe`` byte for byte. Here the SDK parses those exact bytes, for every fixture as
Stripe sends it (and with a failed translation, a Connect account, non-ASCII text), and
must find the attributes and data the SDK-built message of the same event had, and it
must be the consumer SDK's ``CloudEventMessage`` (the one envelope model).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from cloudevents.conversion import to_json
from cloudevents.http import CloudEvent, from_json
from stripe_bridge import registry
from stripe_bridge.envelope import StripeEvent, parse_body
from stripe_bridge.message import build_message
from stripe_bridge_events.events import CloudEventMessage
from stripe_bridge_testing.deliveries import FIXTURES

NAMES = sorted(path.stem for path in FIXTURES.glob("*.json"))


def _no_constant(token: str) -> Any:
    raise AssertionError(f"{token} in published JSON")


def reference(event: StripeEvent, raw: dict[str, Any]) -> CloudEvent:
    """The event as the SDK built it before (message.py up to this change), from its parts."""
    spec = registry.lookup(event.type)
    attributes: dict[str, Any] = {
        "id": event.id,
        "type": f"com.stripe.{event.type}",
        "source": f"urn:stripe:{event.mode}" + (f":{event.account}" if event.account else ""),
        "time": datetime.fromtimestamp(event.created, tz=UTC).isoformat(),
        "datacontenttype": "application/json",
        "stripelivemode": event.livemode,
        "dataschema": "urn:stripe-bridge:data:untranslated.v1",
    }
    if event.primary_object_id:
        attributes["subject"] = event.primary_object_id
    if event.api_version:
        attributes["stripeapiversion"] = event.api_version
    translation = None
    if spec is not None:
        attributes["dataschema"] = f"urn:stripe-bridge:data:{spec.model.SCHEMA}"
        translation = spec.translate(event).model_dump(mode="json")
    return CloudEvent(attributes, {"translation": translation, "stripe": raw})


def published(body: bytes) -> tuple[bytes, StripeEvent, dict[str, Any]]:
    """What the webhook path publishes for ``body``, with the event and its dict."""
    raw = parse_body(body)
    event = StripeEvent.model_validate(raw)
    return build_message(event, body, "stripe").body, event, raw


def assert_same_event(message: bytes, expected: CloudEvent) -> None:
    """``message`` is strict UTF-8 JSON that the SDK reads as ``expected``, and writes back."""
    value = json.loads(message.decode("utf-8"), parse_constant=_no_constant)
    parsed = from_json(message)
    assert parsed.get_attributes() == expected.get_attributes()
    assert parsed.data == expected.data
    assert json.loads(to_json(parsed)) == value
    CloudEventMessage.model_validate_json(message, strict=True)


@pytest.mark.parametrize("name", NAMES)
def test_every_fixture_as_stripe_sends_it(name: str) -> None:
    body = (FIXTURES / f"{name}.json").read_bytes()  # pretty-printed, as Stripe delivers
    message, event, raw = published(body)
    assert_same_event(message, reference(event, raw))
    assert body in message  # the signed body itself, not a re-serialisation
    # Replay and import hand over a dict: the same event, serialised once.
    from_dict = build_message(event, raw, "stripe").body
    assert json.loads(from_dict) == json.loads(message)


def test_connect_account_and_non_ascii_text() -> None:
    body = (FIXTURES / "invoice_paid.json").read_bytes()
    event = json.loads(body)
    event["account"] = "acct_1Abc"
    event["data"]["object"]["customer_name"] = "Zoë Ünlü \u2013 株式会社 \U0001f600"
    compact = json.dumps(event, ensure_ascii=False, separators=(",", ":")).encode()
    message, parsed_event, raw = published(compact)
    assert parsed_event.account == "acct_1Abc"
    assert_same_event(message, reference(parsed_event, raw))
    assert from_json(message)["source"] == "urn:stripe:test:acct_1Abc"


def test_failed_translation_is_an_attribute() -> None:
    whole = json.loads((FIXTURES / "invoice_paid.json").read_bytes())
    event = json.loads(json.dumps(whole))
    del event["data"]["object"]["currency"]
    message, _event, raw = published(json.dumps(event).encode())
    cloudevent = from_json(message)
    assert "currency" in cloudevent["translationerror"]
    assert cloudevent.data == {"translation": None, "stripe": raw}
    attributes = dict(cloudevent.get_attributes())
    del attributes["translationerror"]
    # The attributes do not depend on the object's fields: those of the whole event.
    assert attributes == reference(StripeEvent.model_validate(whole), whole).get_attributes()


def test_untranslated_type_names_the_untranslated_data_schema() -> None:
    message, event, raw = published((FIXTURES / "charge_succeeded.json").read_bytes())
    assert registry.lookup(event.type) is None
    dataschema = from_json(message).get_attributes()["dataschema"]
    assert dataschema == "urn:stripe-bridge:data:untranslated.v1"
    assert_same_event(message, reference(event, raw))
