"""Stripe Checkout Sessions for a tier, and Customer Portal sessions (stripe-python, async).

The tier a session sells is written into the session's and the subscription's metadata
(``TierConfig.metadata_key``), so the projector can name the tier from the
``checkout.session.completed`` event before the subscription events arrive.

A caller may pass its own success/cancel/return URL, but only one whose origin is allowed
(``StripeSettings.redirect_origins``): anything else would make the function an open
redirect to wherever the caller likes, behind Stripe's trusted domain.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from pydantic import AnyHttpUrl, BaseModel, ConfigDict, Field, SecretStr, field_validator

from ..config import EnvModel
from .tiers import TierConfig


class StripeSettings(EnvModel):
    """Settings of the checkout and portal functions (``STRIPE_*``, ``BILLING_*``)."""

    stripe_api_key: SecretStr = Field(description="Stripe secret key `sk_...` or `rk_...`.")
    stripe_api_base: str | None = Field(
        default=None, pattern=r"^https?://", description="Stripe API base URL (tests, proxies)."
    )
    stripe_max_network_retries: int = Field(default=2, ge=0, le=5)
    billing_tiers_file: Path | None = Field(default=None, description="Tier config file.")
    checkout_success_url: AnyHttpUrl = Field(description="Where Checkout sends the customer.")
    checkout_cancel_url: AnyHttpUrl | None = None
    portal_return_url: AnyHttpUrl | None = None
    billing_redirect_origins: str = Field(
        default="",
        description="Comma-separated origins (`https://app.example.com`) a caller's "
        "success/cancel/return URL may have, besides those of the configured URLs.",
    )

    @field_validator("billing_redirect_origins")
    @classmethod
    def _origins_are_urls(cls, value: str) -> str:
        # Fail at start (exit 2), not on the first request that needs the list.
        _urls(value)
        return value

    def redirect_origins(self) -> frozenset[str]:
        """The origins a caller-supplied URL may have: the configured URLs' and the extra ones."""
        configured = (self.checkout_success_url, self.checkout_cancel_url, self.portal_return_url)
        extra = _urls(self.billing_redirect_origins)
        return frozenset(origin(url) for url in (*configured, *extra) if url is not None)


def _urls(comma_separated: str) -> list[AnyHttpUrl]:
    return [AnyHttpUrl(item.strip()) for item in comma_separated.split(",") if item.strip()]


def origin(url: AnyHttpUrl) -> str:
    """``scheme://host:port`` of ``url`` (the port made explicit, so 443 and none compare equal)."""
    return f"{url.scheme}://{url.host}:{url.port}"


class CheckoutRequest(BaseModel):
    """Body of the checkout function."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    customer_id: str = Field(pattern=r"^cus_[A-Za-z0-9]+$")
    tier: str = Field(min_length=1, max_length=64)
    quantity: int = Field(default=1, ge=1, le=10_000)
    success_url: AnyHttpUrl | None = None
    cancel_url: AnyHttpUrl | None = None


class PortalRequest(BaseModel):
    """Body of the portal function."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    customer_id: str = Field(pattern=r"^cus_[A-Za-z0-9]+$")
    return_url: AnyHttpUrl | None = None


class StripeFailure(StrEnum):
    """Why a Stripe call failed; maps onto the function's HTTP status."""

    REJECTED = "stripe_rejected"  # 4xx about the request (unknown customer, bad price)
    UNAVAILABLE = "stripe_unavailable"  # network, 5xx, rate limited: try again later
    MISCONFIGURED = "stripe_misconfigured"  # our key is wrong or lacks permission
    NOT_SOLD = "tier_not_sold"  # the tier is unknown or has no checkout price
    REDIRECT_NOT_ALLOWED = "redirect_not_allowed"  # a caller's URL outside the allowlist


class CheckoutError(Exception):
    """A session could not be created; ``message`` is safe to show the caller."""

    def __init__(self, failure: StripeFailure, message: str) -> None:
        super().__init__(message)
        self.failure = failure
        self.message = message


@dataclass(frozen=True)
class SessionLink:
    """A created session: its id and the URL to send the customer to."""

    id: str
    url: str


def stripe_client(settings: StripeSettings) -> Any:
    """A ``StripeClient`` with an async HTTP client and the configured API base."""
    import stripe

    options: dict[str, Any] = {
        "http_client": stripe.HTTPXClient(),
        "max_network_retries": settings.stripe_max_network_retries,
    }
    if settings.stripe_api_base:
        options["base_addresses"] = {"api": settings.stripe_api_base.rstrip("/")}
    return stripe.StripeClient(settings.stripe_api_key.get_secret_value(), **options)


def _translate_error(exc: Exception) -> CheckoutError:
    import stripe

    if isinstance(exc, stripe.AuthenticationError | stripe.PermissionError):
        return CheckoutError(StripeFailure.MISCONFIGURED, "Stripe refused our API key")
    if isinstance(exc, stripe.InvalidRequestError | stripe.CardError):
        return CheckoutError(StripeFailure.REJECTED, str(exc.user_message or "invalid request"))
    return CheckoutError(StripeFailure.UNAVAILABLE, "Stripe is unavailable, try again later")


def redirect_url(
    requested: AnyHttpUrl | None, configured: AnyHttpUrl | None, settings: StripeSettings
) -> AnyHttpUrl | None:
    """``requested`` if its origin is allowed (else a CheckoutError), or ``configured``."""
    if requested is None:
        return configured
    if origin(requested) not in settings.redirect_origins():
        raise CheckoutError(
            StripeFailure.REDIRECT_NOT_ALLOWED, f"redirect origin {origin(requested)} not allowed"
        )
    return requested


async def _price_id(client: Any, price: str) -> str:
    """A price id as is; a lookup key resolved to its active price."""
    if price.startswith("price_"):
        return price
    found = await client.v1.prices.list_async(params={"lookup_keys": [price], "active": True})
    if not found.data:
        raise CheckoutError(StripeFailure.NOT_SOLD, f"no active price with lookup key {price}")
    price_id: str = found.data[0].id
    return price_id


async def create_checkout_session(
    client: Any, config: TierConfig, settings: StripeSettings, request: CheckoutRequest
) -> SessionLink:
    """A subscription-mode Checkout Session selling ``request.tier`` to the customer."""
    import stripe

    tier = config.get(request.tier)
    if tier is None or tier.checkout_price is None:
        raise CheckoutError(StripeFailure.NOT_SOLD, f"tier {request.tier!r} is not sold")
    metadata = {config.metadata_key: tier.name}
    success = redirect_url(request.success_url, settings.checkout_success_url, settings)
    cancel = redirect_url(request.cancel_url, settings.checkout_cancel_url, settings)
    try:
        price = await _price_id(client, tier.checkout_price)
        params: dict[str, Any] = {
            "mode": "subscription",
            "customer": request.customer_id,
            "line_items": [{"price": price, "quantity": request.quantity}],
            "success_url": str(success),
            "metadata": metadata,
            "subscription_data": {"metadata": metadata},
        }
        if cancel is not None:
            params["cancel_url"] = str(cancel)
        session = await client.v1.checkout.sessions.create_async(params=params)
    except stripe.StripeError as exc:
        raise _translate_error(exc) from exc
    return SessionLink(session.id, session.url)


async def create_portal_session(
    client: Any, settings: StripeSettings, request: PortalRequest
) -> SessionLink:
    """A Customer Portal session where the customer manages their subscription."""
    import stripe

    params: dict[str, Any] = {"customer": request.customer_id}
    return_url = redirect_url(request.return_url, settings.portal_return_url, settings)
    if return_url is not None:
        params["return_url"] = str(return_url)
    try:
        session = await client.v1.billing_portal.sessions.create_async(params=params)
    except stripe.StripeError as exc:
        raise _translate_error(exc) from exc
    return SessionLink(session.id, session.url)
