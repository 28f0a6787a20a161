"""The Stripe stand-in refuses what Stripe refuses (issue #18 item 4).

Each request is sent by stripe-python, as the bridge sends them, and must come back as the
error Stripe answers: its status, ``param`` and ``code`` (docs.stripe.com/error-codes).
The first ten are the requests the earlier stand-ins answered with 200; the next two
crashed them without an HTTP answer.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
import stripe
from stripe_bridge.billing.tiers import DEFAULT_TIERS
from stripe_bridge_testing.deliveries import fixture_event
from stripe_bridge_testing.stripe_params import Refusal, check, decode_form
from stripe_bridge_testing.stripe_standin import StripeStandIn

#: A request made with a client; Any: these send what stripe-python's types refuse.
Call = Callable[[Any], Any]
CHECKOUT: dict[str, Any] = {
    "mode": "subscription",
    "customer": "cus_Abc123",
    "line_items": [{"price": "price_pro_m", "quantity": 1}],
    "success_url": "https://app.example/welcome",
}
EVENT = fixture_event("invoice_paid")


@pytest.fixture(scope="module")
def api() -> Iterator[StripeStandIn]:
    """One stand-in for the module: nothing here changes its state."""
    with StripeStandIn(events=[EVENT]) as server:
        yield server


def client(api: StripeStandIn, key: str | None = None) -> stripe.StripeClient:
    """stripe-python pointed at the stand-in, without retries."""
    return stripe.StripeClient(
        key or api.api_key, base_addresses={"api": api.url}, max_network_retries=0
    )


def checkout(**changes: Any) -> Call:
    return lambda c: c.v1.checkout.sessions.create(params={**CHECKOUT, **changes})


def events(**params: Any) -> Call:
    return lambda c: c.v1.events.list(params=params)


REFUSED: list[tuple[str, Call, str, str | None]] = [
    ("mode=subscriptions", checkout(mode="subscriptions"), "mode", None),
    ("locale=klingon", checkout(locale="klingon"), "locale", None),
    ("unknown tier", checkout(tier="pro"), "tier", "parameter_unknown"),
    (
        "unknown lookup_key",
        checkout(line_items=[{"lookup_key": "pro_monthly", "quantity": 1}]),
        "line_items[0][lookup_key]",
        "parameter_unknown",
    ),
    ("unknown since", events(since=1), "since", "parameter_unknown"),
    (
        "quantity=many",
        checkout(line_items=[{"price": "price_pro_m", "quantity": "many"}]),
        "line_items[0][quantity]",
        "parameter_invalid_integer",
    ),
    ("active=yes", lambda c: c.v1.prices.list(params={"active": "yes"}), "active", None),
    ("delivery_success=no", events(delivery_success="no"), "delivery_success", None),
    (
        "portal without customer",
        lambda c: c.v1.billing_portal.sessions.create(params={"return_url": "https://a.example"}),
        "customer",
        "parameter_missing",
    ),
    ("created[after]", events(created={"after": 1}), "created[after]", "parameter_unknown"),
    ("limit=ten", events(limit="ten"), "limit", "parameter_invalid_integer"),
    ("unknown cursor", events(starting_after="evt_nope"), "starting_after", "resource_missing"),
    (
        "type and types",
        events(type="invoice.*", types=["invoice.paid"]),
        "types",
        "parameters_exclusive",
    ),
    ("limit=1000", events(limit=1000), "limit", "parameter_invalid_integer"),
]


@pytest.mark.parametrize(
    ("call", "param", "code"), [r[1:] for r in REFUSED], ids=[r[0] for r in REFUSED]
)
def test_what_stripe_refuses_is_a_400_naming_the_param(
    api: StripeStandIn, call: Call, param: str, code: str | None
) -> None:
    with pytest.raises(stripe.InvalidRequestError) as refused:
        call(client(api))
    assert refused.value.http_status == 400
    # Stripe has no code for a value outside an enum or a bad boolean: param and message only.
    assert (refused.value.param, refused.value.code) == (param, code)
    body: Any = refused.value.json_body
    error = body["error"]
    assert error["type"] == "invalid_request_error" and error["message"]


def test_what_stripe_accepts_is_answered(api: StripeStandIn) -> None:
    stripe_client: Any = client(api)
    assert stripe_client.v1.checkout.sessions.create(params=CHECKOUT).url
    wildcard = stripe_client.v1.events.list(params={"type": "invoice.*", "created": {"gte": 1}})
    assert [e.id for e in wildcard.data] == [EVENT["id"]]
    assert stripe_client.v1.events.list(params={"type": "charge.*"}).data == []
    assert stripe_client.v1.events.retrieve(EVENT["id"]).id == EVENT["id"]


def test_bad_key_is_401_and_unknown_ids_and_urls_are_404(api: StripeStandIn) -> None:
    with pytest.raises(stripe.AuthenticationError) as unauthorised:
        client(api, "sk_test_wrong").v1.events.list()
    assert unauthorised.value.http_status == 401
    with pytest.raises(stripe.InvalidRequestError) as missing:
        client(api).v1.events.retrieve("evt_nope")
    assert (missing.value.http_status, missing.value.code) == (404, "resource_missing")
    with pytest.raises(stripe.InvalidRequestError) as unknown_url:
        client(api).v1.customers.list()
    assert unknown_url.value.http_status == 404


def test_forms_decode_as_stripe_python_encodes_them() -> None:
    pairs = [("a[0][b]", "1"), ("a[1][b]", "2"), ("m[k]", "v"), ("t[]", "x"), ("t[]", "y")]
    assert decode_form(pairs) == {"a": [{"b": "1"}, {"b": "2"}], "m": {"k": "v"}, "t": ["x", "y"]}
    check(decode_form([("metadata", "")]), stripe.params.checkout.SessionCreateParams)
    with pytest.raises(Refusal) as refused:
        check(decode_form([("metadata", "x"), ("mode", "setup")]), stripe.params.EventListParams)
    assert refused.value.code == "parameter_unknown"


def test_paying_a_session_lists_the_subscription_then_the_completed_session() -> None:
    with StripeStandIn() as api:
        teams = {
            "line_items": [{"price": "price_teams_m", "quantity": 1}],
            "metadata": {"tier": "teams"},
            "subscription_data": {"metadata": {"tier": "teams"}},
        }
        session = checkout(**teams)(client(api))
        assert api.complete_checkout(session.id) == []  # no webhook endpoint: nothing sent
        listed = client(api).v1.events.list(params={"limit": 10}).data
        with pytest.raises(KeyError):
            api.complete_checkout("cs_test_never_created")
    completed, created = (event.to_dict() for event in listed)  # newest first
    assert (created["type"], completed["type"]) == (
        "customer.subscription.created",
        "checkout.session.completed",
    )
    subscription, paid = created["data"]["object"], completed["data"]["object"]
    assert subscription["customer"] == paid["customer"] == "cus_Abc123"
    assert paid["id"] == session.id and paid["subscription"] == subscription["id"]
    assert paid["metadata"] == subscription["metadata"] == {"tier": "teams"}
    assert DEFAULT_TIERS.tier_for_subscription(subscription) == "teams"
