"""Every translated event type, from real Stripe payloads, in pre-basil and basil shapes.

The translations are checked field by field in-process, then every fixture goes through
a real function process into a real stream and is read back as a CloudEvent.
"""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime
from typing import Any

import pytest
from cloudevents.http import from_json
from stripe_bridge import registry
from stripe_bridge.envelope import StripeEvent
from stripe_bridge.message import build_message, parse_message
from stripe_bridge.ops.natsserver import NatsServer
from stripe_bridge_testing.deliveries import (
    fixture_event,
    last_seq,
    post_event,
    stored_event,
    stored_message,
)
from stripe_bridge_testing.function_metrics import metric
from stripe_bridge_testing.processes import FunctionProcess

from ..billing.eras import AMOUNT, ERAS, PRICE, PRODUCT, era_event

#: Fixture name -> (event type, fields the typed translation must have).
EXPECTED: dict[str, tuple[str, dict[str, Any]]] = {
    "checkout_session_completed": (
        "checkout.session.completed",
        {
            "session_id": "cs_live_9RBjcHiy2i5p99Tf1MYM90c3SHK1grU0E6Ae6pKWR2KPA4ZiuKiB2X1Y3X",
            "customer_id": "cus_IhGfebO16cMIGN",
            # customer_email is null: the address comes from customer_details.
            "customer_email": "billz@supabase.io",
            "mode": "payment",
            "status": "complete",
            "payment_status": "paid",
            "subscription_id": None,
            "invoice_id": "in_1KJqKBJDPojXS6LNJbvLUgEy",
            "amount_total": 999,
            "currency": "eur",
            "metadata": {},
        },
    ),
    "subscription_created": (
        "customer.subscription.created",
        {
            "subscription_id": "sub_JdIzvfy6o5GZRd",
            "customer_id": "cus_IhGfebO16cMIGN",
            "status": "active",
            "cancel_at_period_end": False,
            "current_period_start": 1623148918,
            "current_period_end": 1625740918,
            "changed_fields": [],
        },
    ),
    "subscription_updated": (
        "customer.subscription.updated",
        {
            "subscription_id": "sub_JLEPMp81LApOJl",
            "status": "active",
            "current_period_start": 1618980344,
            "current_period_end": 1621572344,
            "changed_fields": ["metadata"],
        },
    ),
    "subscription_updated_basil": (
        "customer.subscription.updated",
        {
            "subscription_id": "sub_JLEPMp81LApOJl",
            "status": "active",
            # basil: the periods exist only on the items.
            "current_period_start": 1618980344,
            "current_period_end": 1621572344,
            "changed_fields": ["metadata"],
        },
    ),
    "subscription_deleted": (
        "customer.subscription.deleted",
        {
            "subscription_id": "sub_JdIzvfy6o5GZRd",
            "status": "canceled",
            "canceled_at": 1623149102,
            "ended_at": 1623149102,
        },
    ),
    "subscription_trial_will_end": (
        "customer.subscription.trial_will_end",
        {
            "subscription_id": "sub_JdIzvfy6o5GZRd",
            "status": "trialing",
            "trial_start": 1623148918,
            "trial_end": 1624358518,
        },
    ),
    "invoice_paid": (
        "invoice.paid",
        {
            "invoice_id": "in_1KJqKBJDPojXS6LNJbvLUgEy",
            "customer_id": "cus_JsuO3bmrj0QlAw",
            "subscription_id": "sub_JsuPyCPhXWfZar",
            "status": "paid",
            "billing_reason": "subscription_cycle",
            "currency": "usd",
            "amount_due": 0,
            "amount_paid": 0,
            "period_start": 1639966880,
            "period_end": 1642645280,
        },
    ),
    "invoice_paid_basil": (
        "invoice.paid",
        {
            "invoice_id": "in_1KJqKBJDPojXS6LNJbvLUgEy",
            # basil: the subscription link moved under parent.subscription_details.
            "subscription_id": "sub_JsuPyCPhXWfZar",
            "status": "paid",
            "currency": "usd",
        },
    ),
    "invoice_payment_succeeded": (
        # Sent with invoice.paid for the same invoice; older integrations listen to this.
        "invoice.payment_succeeded",
        {
            "invoice_id": "in_1KJqKBJDPojXS6LNJbvLUgEy",
            "subscription_id": "sub_JsuPyCPhXWfZar",
            "status": "paid",
            "amount_remaining": 0,
        },
    ),
    "invoice_payment_failed": (
        "invoice.payment_failed",
        {
            "invoice_id": "in_1KJqKBJDPojXS6LNJbvLUgEy",
            "subscription_id": "sub_JsuPyCPhXWfZar",
            "status": "open",
            "amount_due": 2900,
            "amount_remaining": 2900,
            "attempt_count": 1,
            "next_payment_attempt": 1642904671,
        },
    ),
    "active_entitlement_summary_updated": (
        "entitlements.active_entitlement_summary.updated",
        {
            "customer_id": "cus_Sll319ReSxCmEi",
            "entitlements": [
                {
                    "entitlement_id": "ent_test_61SzbY9Pui5KGP3yf41BRSrwpzKxHTFY",
                    "feature_id": "feat_test_61SzbVaDzF2GIc5ng41BRSrwpzKxHABs",
                    "lookup_key": "journeys",
                }
            ],
        },
    ),
}

#: Items and lines, per shape: where the price and the periods are read from.
PRE_BASIL_ITEM = {
    "item_id": "si_JLEPdb3X81qQ9L",
    "price_id": "price_1IDQm5JDPojXS6LNM31hxKzp",
    "product_id": "prod_Ip4vqwv3EJ7Mi0",
    "lookup_key": None,
    "unit_amount": 0,
    "currency": "usd",
    "quantity": 1,
    "current_period_start": None,
    "current_period_end": None,
}
INVOICE_LINE = {
    "line_id": "il_1KJqKBJDPojXS6LND42vdxtT",
    "price_id": "price_1IDQm5JDPojXS6LNM31hxKzp",
    "quantity": 1,
    "amount": 0,
    "period_start": 1642645280,
    "period_end": 1645323680,
}


def translation_of(name: str) -> dict[str, Any]:
    event = fixture_event(name)
    message = build_message(StripeEvent.model_validate(event), event, "stripe")
    assert message.translation_error is None
    data: dict[str, Any] = parse_message(message.body)["data"]
    assert data["stripe"] == event
    translation: dict[str, Any] = data["translation"]
    return translation


def test_every_registered_type_has_a_fixture() -> None:
    covered = {event_type for event_type, _ in EXPECTED.values()}
    assert covered == {t.name for t in registry.EVENT_TYPES}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_translation_fields(name: str) -> None:
    event_type, fields = EXPECTED[name]
    assert fixture_event(name)["type"] == event_type
    translation = translation_of(name)
    assert {key: translation[key] for key in fields} == fields
    # The translation is exactly the registered model, nothing more or less.
    model = registry.lookup(event_type)
    assert model is not None
    assert set(translation) == set(model.model.model_fields)


def test_subscription_items_in_both_shapes() -> None:
    (pre,) = translation_of("subscription_updated")["items"]
    (basil,) = translation_of("subscription_updated_basil")["items"]
    assert pre == PRE_BASIL_ITEM
    assert basil == {
        **PRE_BASIL_ITEM,
        "current_period_start": 1618980344,
        "current_period_end": 1621572344,
    }


def test_invoice_lines_in_both_shapes() -> None:
    # Pre-basil lines carry `price`; basil lines carry `pricing.price_details.price`.
    assert translation_of("invoice_paid")["lines"] == [INVOICE_LINE]
    assert translation_of("invoice_paid_basil")["lines"] == [INVOICE_LINE]


def translation_of_era(era: str, event_type: str) -> dict[str, Any]:
    event = era_event(era, event_type, "evt_era", 1_700_000_000, "sub_era")
    message = build_message(StripeEvent.model_validate(event), event, "stripe")
    assert message.translation_error is None
    translation: dict[str, Any] = parse_message(message.body)["data"]["translation"]
    return translation


@pytest.mark.parametrize("era", ERAS)
def test_every_api_era_translates_with_its_money_fields(era: str) -> None:
    # Stripe's own example objects of each era (tests/billing/eras.py): 2017-08-15 has
    # no amount_paid/amount_remaining and plan-only items and lines; basil moved the
    # subscription link, the line's price and the periods.
    failed = translation_of_era(era, "invoice.payment_failed")
    assert (failed["amount_due"], failed["amount_paid"], failed["amount_remaining"]) == (
        AMOUNT,
        0,
        AMOUNT,
    )
    assert failed["subscription_id"] == "sub_era"
    assert [line["price_id"] for line in failed["lines"]] == [PRICE]
    assert [line["amount"] for line in failed["lines"]] == [AMOUNT]
    paid = translation_of_era(era, "invoice.payment_succeeded")
    assert (paid["amount_paid"], paid["amount_remaining"]) == (AMOUNT, 0)
    (item,) = translation_of_era(era, "customer.subscription.updated")["items"]
    assert (item["price_id"], item["product_id"]) == (PRICE, PRODUCT)
    assert (item["unit_amount"], item["currency"]) == (AMOUNT, "usd")


def test_api_version_decides_which_shape_wins() -> None:
    # A payload carrying both shapes (mixed fixtures, pinned accounts): the announced
    # version's shape is preferred, the other is the fallback.
    event = fixture_event("subscription_updated")
    obj = event["data"]["object"]
    obj["items"]["data"][0].update(current_period_start=1, current_period_end=2)
    pre = build_message(StripeEvent.model_validate(event), event, "stripe")
    assert parse_message(pre.body)["data"]["translation"]["current_period_end"] == 1621572344
    basil = copy.deepcopy(event)
    basil["api_version"] = "2025-03-31.basil"
    new = build_message(StripeEvent.model_validate(basil), basil, "stripe")
    assert parse_message(new.body)["data"]["translation"]["current_period_end"] == 2


def test_basil_subscription_with_items_on_different_periods() -> None:
    # basil allows items with their own periods (mixed intervals): the subscription's
    # period spans them all, and each item keeps its own.
    event = fixture_event("subscription_updated_basil")
    items = event["data"]["object"]["items"]["data"]
    second = {**copy.deepcopy(items[0]), "id": "si_second"}
    second.update(current_period_start=1618900000, current_period_end=1650000000)
    items.append(second)
    message = build_message(StripeEvent.model_validate(event), event, "stripe")
    translation = parse_message(message.body)["data"]["translation"]
    assert (translation["current_period_start"], translation["current_period_end"]) == (
        1618900000,
        1650000000,
    )
    assert [i["current_period_end"] for i in translation["items"]] == [1621572344, 1650000000]


async def test_every_fixture_lands_translated_in_the_stream(
    shared_stream: NatsServer, catch_all: FunctionProcess
) -> None:
    for name, (event_type, fields) in sorted(EXPECTED.items()):
        event = fixture_event(name, fresh_id=True)
        response = post_event(catch_all.url, event)
        assert response.status_code == 200, response.text
        assert response.json()["status"] == "published"
        msg = await stored_message(shared_stream.url, event["id"])
        mode = "live" if event["livemode"] else "test"
        assert msg.subject == f"stripe.{mode}.{event_type}"
        assert msg.headers["Content-Type"] == "application/cloudevents+json"
        stored = json.loads(msg.data)
        # What was published, read by the CloudEvents SDK (tests/test_message.py in depth).
        assert from_json(msg.data).get_attributes() == {
            k: v for k, v in stored.items() if k != "data"
        }
        spec = registry.lookup(event_type)
        assert spec is not None
        assert stored["specversion"] == "1.0"
        assert stored["id"] == event["id"]
        assert stored["source"] == f"urn:stripe:{mode}"
        assert stored["time"] == datetime.fromtimestamp(event["created"], UTC).isoformat()
        assert stored["stripelivemode"] is event["livemode"]
        assert stored["type"] == f"com.stripe.{event_type}"
        assert stored["dataschema"] == f"urn:stripe-bridge:data:{spec.model.SCHEMA}"
        assert stored["subject"] == (event["data"]["object"].get("id") or fields["customer_id"])
        assert stored["stripeapiversion"] == event["api_version"]
        assert "translationerror" not in stored
        assert stored["data"]["stripe"] == event
        translation = stored["data"]["translation"]
        assert {key: translation[key] for key in fields} == fields


async def test_untranslated_types_are_published_whole(
    shared_stream: NatsServer, catch_all: FunctionProcess
) -> None:
    event = fixture_event("charge_succeeded", fresh_id=True)
    response = post_event(catch_all.url, event)
    assert response.status_code == 200, response.text
    stored = await stored_event(shared_stream.url, event["id"])
    assert stored["type"] == "com.stripe.charge.succeeded"
    assert stored["dataschema"] == "urn:stripe-bridge:data:untranslated.v1"
    assert "translationerror" not in stored
    assert stored["data"] == {"translation": None, "stripe": event}


@pytest.mark.parametrize(
    ("name", "missing"),
    [
        ("invoice_paid", "currency"),
        ("subscription_updated_basil", "status"),
        ("checkout_session_completed", "mode"),
        ("active_entitlement_summary_updated", "customer"),
    ],
)
async def test_translation_failure_is_published_untranslated(
    shared_stream: NatsServer, catch_all: FunctionProcess, name: str, missing: str
) -> None:
    event = fixture_event(name, fresh_id=True)
    del event["data"]["object"][missing]
    failures_before = metric(
        catch_all.url, "stripe_bridge_translation_failures_total", event_type=event["type"]
    )
    response = post_event(catch_all.url, event)
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "published"
    stored = await stored_event(shared_stream.url, event["id"])
    assert missing in stored["translationerror"]
    assert stored["data"] == {"translation": None, "stripe": event}
    failures_after = metric(
        catch_all.url, "stripe_bridge_translation_failures_total", event_type=event["type"]
    )
    assert failures_after == failures_before + 1
    # A redelivery is a duplicate like any other: nothing is published twice.
    seq = await last_seq(shared_stream.url)
    again = post_event(catch_all.url, event)
    assert again.json()["status"] == "duplicate"
    assert await last_seq(shared_stream.url) == seq
