"""Checkout and Customer Portal functions against a local stand-in of Stripe's API."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.routing import Route
from stripe_bridge.billing.checkout import StripeSettings
from stripe_bridge.billing.endpoints import (
    BillingEndpoint,
    make_checkout_function,
    make_portal_function,
    stripe_parts,
)
from stripe_bridge.config import Settings
from stripe_bridge_testing.stripe_standin import StripeStandIn

#: The bridge settings a function starts with (only MAX_BODY_BYTES matters here).
SETTINGS = Settings()


@pytest.fixture
def stripe_api() -> Iterator[StripeStandIn]:
    """The Stripe stand-in on a free loopback port."""
    with StripeStandIn() as server:
        yield server


def settings_for(api: StripeStandIn, **overrides: Any) -> StripeSettings:
    """Function settings pointing stripe-python at the stand-in."""
    base: dict[str, Any] = {
        "stripe_api_key": api.api_key,
        "stripe_api_base": api.url,
        "stripe_max_network_retries": 0,
        "checkout_success_url": "https://app.example/welcome",
        "portal_return_url": "https://app.example/account",
    }
    return StripeSettings(**{**base, **overrides})


async def client_for(function: BillingEndpoint) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client calling ``function`` in process, as functions-framework would."""
    route = Route("/{path:path}", function.handle_starlette, methods=["GET", "POST", "PUT"])
    app = Starlette(routes=[route])
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://function"
    ) as client:
        yield client


@pytest.fixture
async def checkout(stripe_api: StripeStandIn) -> AsyncIterator[httpx.AsyncClient]:
    """The checkout function."""
    async for client in client_for(
        make_checkout_function(SETTINGS, stripe_parts(settings_for(stripe_api)))
    ):
        yield client


@pytest.fixture
async def portal(stripe_api: StripeStandIn) -> AsyncIterator[httpx.AsyncClient]:
    """The portal function."""
    async for client in client_for(
        make_portal_function(SETTINGS, stripe_parts(settings_for(stripe_api)))
    ):
        yield client


async def test_checkout_session_sells_the_tier_price(
    checkout: httpx.AsyncClient, stripe_api: StripeStandIn
) -> None:
    response = await checkout.post("/", json={"customer_id": "cus_Abc123", "tier": "teams"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["id"].startswith("cs_test_")
    assert body["url"] == f"https://checkout.stripe.com/c/pay/{body['id']}"
    lookup, create = stripe_api.calls
    assert lookup[:2] == ("GET", "/v1/prices")
    assert lookup[2]["lookup_keys[0]"] == "teams_monthly"
    method, path, form = create
    assert (method, path) == ("POST", "/v1/checkout/sessions")
    assert form == {
        "mode": "subscription",
        "customer": "cus_Abc123",
        "line_items[0][price]": "price_teams_m",
        "line_items[0][quantity]": "1",
        "success_url": "https://app.example/welcome",
        "metadata[tier]": "teams",
        "subscription_data[metadata][tier]": "teams",
    }


@pytest.mark.parametrize(
    ("body", "status", "error"),
    [
        ({"customer_id": "cus_Abc123", "tier": "free"}, 422, "tier 'free' is not sold"),
        ({"customer_id": "cus_Abc123", "tier": "gold"}, 422, "tier 'gold' is not sold"),
        ({"customer_id": "not-a-customer", "tier": "pro"}, 422, "customer_id: String should"),
        ({"customer_id": "cus_missing", "tier": "pro"}, 422, "No such customer: 'cus_missing'"),
    ],
)
async def test_checkout_refusals(
    checkout: httpx.AsyncClient, body: dict[str, str], status: int, error: str
) -> None:
    response = await checkout.post("/", json=body)
    assert response.status_code == status
    assert error in response.json()["error"]


async def test_checkout_bad_json_and_method(checkout: httpx.AsyncClient) -> None:
    assert (await checkout.post("/", content=b"{nope")).status_code == 400
    assert (await checkout.put("/", json={})).status_code == 405
    assert (await checkout.get("/healthz")).status_code == 200
    metrics = (await checkout.get("/metrics")).text
    counted = (
        'stripe_bridge_billing_requests_total{function="billing_checkout",outcome="malformed_json"}'
    )
    assert f"{counted} 1.0" in metrics


async def test_stripe_down_is_503_with_retry_after(
    checkout: httpx.AsyncClient, stripe_api: StripeStandIn
) -> None:
    stripe_api.fail_with = 500
    response = await checkout.post("/", json={"customer_id": "cus_Abc123", "tier": "pro"})
    assert response.status_code == 503
    assert response.headers["retry-after"] == "30"


async def test_refused_stripe_key_is_500_without_the_key(stripe_api: StripeStandIn) -> None:
    parts = stripe_parts(settings_for(stripe_api, stripe_api_key="sk_test_wrong_key"))
    async for client in client_for(make_checkout_function(SETTINGS, parts)):
        response = await client.post("/", json={"customer_id": "cus_Abc123", "tier": "pro"})
        assert response.status_code == 500
        assert response.json() == {"error": "Stripe refused our API key"}


async def test_portal_session(portal: httpx.AsyncClient, stripe_api: StripeStandIn) -> None:
    response = await portal.post("/", json={"customer_id": "cus_Abc123"})
    assert response.status_code == 200, response.text
    assert response.json()["url"].startswith("https://billing.stripe.com/p/session/bps_")
    (call,) = stripe_api.calls
    assert call == (
        "POST",
        "/v1/billing_portal/sessions",
        {"customer": "cus_Abc123", "return_url": "https://app.example/account"},
    )
    missing = await portal.post("/", json={"customer_id": "cus_missing"})
    assert missing.status_code == 422


async def test_caller_urls_of_an_allowed_origin_are_used(
    checkout: httpx.AsyncClient, portal: httpx.AsyncClient, stripe_api: StripeStandIn
) -> None:
    sent = {"customer_id": "cus_Abc123", "tier": "teams"}
    urls = {"success_url": "https://app.example/done?x=1", "cancel_url": "https://app.example:443/"}
    response = await checkout.post("/", json={**sent, **urls})
    assert response.status_code == 200, response.text
    form = stripe_api.calls[-1][2]
    # Stripe gets the URL as pydantic normalised it (the default port dropped).
    assert (form["success_url"], form["cancel_url"]) == (
        urls["success_url"],
        "https://app.example/",
    )
    response = await portal.post(
        "/", json={"customer_id": "cus_Abc123", "return_url": "https://app.example/x"}
    )
    assert response.status_code == 200, response.text
    assert stripe_api.calls[-1][2]["return_url"] == "https://app.example/x"


@pytest.mark.parametrize(
    "url",
    [
        "https://evil.example/phish",
        "http://app.example/welcome",  # another scheme is another origin
        "https://app.example:8443/welcome",
        "https://app.example.evil.example/",
    ],
)
async def test_caller_urls_of_other_origins_are_422_without_calling_stripe(
    checkout: httpx.AsyncClient, portal: httpx.AsyncClient, stripe_api: StripeStandIn, url: str
) -> None:
    for client, body in (
        (checkout, {"customer_id": "cus_Abc123", "tier": "pro", "success_url": url}),
        (checkout, {"customer_id": "cus_Abc123", "tier": "pro", "cancel_url": url}),
        (portal, {"customer_id": "cus_Abc123", "return_url": url}),
    ):
        response = await client.post("/", json=body)
        assert response.status_code == 422, (body, response.text)
        assert "not allowed" in response.json()["error"]
    assert stripe_api.calls == []
    metrics = (await portal.get("/metrics")).text
    assert 'function="billing_portal",outcome="redirect_not_allowed"} 1.0' in metrics


async def test_extra_redirect_origins_are_allowed(stripe_api: StripeStandIn) -> None:
    settings = settings_for(stripe_api, billing_redirect_origins="https://shop.example, http://l:8")
    assert settings.redirect_origins() == {
        "https://app.example:443",
        "https://shop.example:443",
        "http://l:8",
    }
    async for client in client_for(make_portal_function(SETTINGS, stripe_parts(settings))):
        body = {"customer_id": "cus_Abc123", "return_url": "https://shop.example/back"}
        assert (await client.post("/", json=body)).status_code == 200


def test_invalid_redirect_origin_fails_at_start(stripe_api: StripeStandIn) -> None:
    with pytest.raises(ValueError, match="billing_redirect_origins"):
        settings_for(stripe_api, billing_redirect_origins="not a url")
