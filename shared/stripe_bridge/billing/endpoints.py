"""The billing functions: record usage, create Checkout and Portal sessions.

Each is an ``http.HttpFunction`` like the webhook functions (the same probes, method and
body-size contract, served by ``stripe-bridge serve``). Their modules under ``functions/``
are generated from ``billing.catalog`` by ``stripe-bridge generate``.

Statuses: 200/202 done; 400 body is not strict JSON (``malformed_json``, the webhook
path's rule: UTF-8 without BOM, finite numbers, at most 64 levels deep); 401 missing/wrong
bearer token; 405 not POST; 413 body (or record count) too large; 422 fields invalid
(duplicate usage ids in one request included), a redirect URL of an origin not allowed
or Stripe refused the request; 500 our Stripe key is refused; 503 NATS or Stripe
unavailable (with Retry-After).
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import cached_property
from typing import Any, TypeVar

from prometheus_client import CollectorRegistry, Counter
from pydantic import BaseModel, Field, SecretStr, TypeAdapter, ValidationError

from ..asgi import HttpRequest
from ..config import ConfigError, EnvModel, LogDeliveries, Settings, load_model
from ..envelope import MalformedBody, parse_body
from ..http import HttpFunction, Reply
from ..jetstream import JetStreamPublisher, PublishError
from ..push import MetricsPusher
from ..reasons import Refused
from ..streams import USAGE_STREAM
from .checkout import (
    CheckoutError,
    CheckoutRequest,
    PortalRequest,
    SessionLink,
    StripeFailure,
    StripeSettings,
    create_checkout_session,
    create_portal_session,
    stripe_client,
)
from .tiers import TierConfig
from .usage import UsageRecord, record_usage

log = logging.getLogger(__name__)

ModelT = TypeVar("ModelT", bound=BaseModel)
#: Answers a POST (body within the limit) with (status, JSON body), or raises Refusal.
Work = Callable[[HttpRequest, bytes], Awaitable[tuple[int, Any]]]
#: Checkout and Portal requests are a few fields: a smaller limit than MAX_BODY_BYTES.
STRIPE_REQUEST_MAX_BYTES = 64 * 1024


class UsageSettings(EnvModel):
    """Settings of the usage function on top of the bridge's NATS settings."""

    env_prefix = "USAGE_"

    api_token: SecretStr | None = Field(
        default=None, description="If set, callers must send `Authorization: Bearer <token>`."
    )
    max_records: int = Field(default=1000, ge=1, le=10_000, description="Records per request.")


class BillingFunctionMetrics:
    """Requests of one billing function by outcome, in the function's own registry."""

    def __init__(self, function: str) -> None:
        self.registry = CollectorRegistry()
        self.function = function
        self.requests = Counter(
            "stripe_bridge_billing_requests",
            "Requests to the billing functions, by function and outcome.",
            ["function", "outcome"],
            registry=self.registry,
        )
        self.usage_records = Counter(
            "stripe_bridge_usage_records",
            "Usage records stored in the USAGE stream (duplicate: already stored).",
            ["outcome"],
            registry=self.registry,
        )

    def count(self, outcome: str) -> None:
        """Count one request."""
        self.requests.labels(self.function, outcome).inc()


class BillingRuntime:
    """What a billing function holds for its lifetime; ``close`` runs on SIGTERM.

    With ``PUSHGATEWAY_URL`` set it pushes its metrics like the webhook functions (a
    scale-to-zero pod is gone before a scrape finds it; docs/observability.md).
    """

    def __init__(
        self, function: str, settings: Settings, publisher: JetStreamPublisher | None = None
    ) -> None:
        self.settings = settings
        self.metrics = BillingFunctionMetrics(function)
        self.publisher = publisher
        self.pusher = MetricsPusher.for_function(settings, self.metrics.registry, function)

    @property
    def collectors(self) -> CollectorRegistry:
        """The Prometheus collectors ``/metrics`` exposes."""
        return self.metrics.registry

    async def ready(self) -> bool:
        """NATS is connected and the stream exists, if this function publishes."""
        return self.publisher is None or await self.publisher.ready()

    async def close(self) -> None:
        """Drain NATS if this function uses it, then push the final metrics."""
        if self.publisher is not None:
            await self.publisher.close()
        if self.pusher is not None:
            await self.pusher.final_push()


class Refusal(Exception):
    """A request ends with ``status`` and a one-line ``message`` (also the metric outcome)."""

    def __init__(self, status: int, outcome: str, message: str, retry_after: int | None = None):
        super().__init__(message)
        self.status = status
        self.outcome = outcome
        self.message = message
        self.retry_after = retry_after


def _validation_message(exc: ValidationError) -> str:
    # Only locations and messages: inputs may carry customer data.
    return "; ".join(
        f"{'.'.join(str(p) for p in err['loc']) or 'body'}: {err['msg']}" for err in exc.errors()
    )


def read_json(body: bytes) -> Any:
    """``body`` as strict JSON (``envelope.parse_body``), or a 400 ``malformed_json`` Refusal."""
    try:
        return parse_body(body)
    except MalformedBody as exc:
        raise Refusal(400, "malformed_json", str(exc)) from None


def unique_ids(records: list[UsageRecord]) -> None:
    """A 422 Refusal if two records of one request share an id (one would be dropped)."""
    first: dict[str, int] = {}
    for index, record in enumerate(records):
        seen = first.setdefault(record.id, index)
        if seen != index:
            raise Refusal(422, "invalid", f"{index}.id: duplicates record {seen} in this request")


def parse(model: type[ModelT], payload: Any) -> ModelT:
    """``payload`` as ``model``, or a 422 Refusal naming the invalid fields."""
    try:
        return model.model_validate(payload)
    except ValidationError as exc:
        raise Refusal(422, "invalid", _validation_message(exc)) from None


def check_bearer(request: HttpRequest, token: SecretStr | None) -> None:
    """401 unless the request carries ``token`` (when one is configured)."""
    if token is None:
        return
    sent = request.header("authorization") or ""
    if not hmac.compare_digest(sent.encode(), f"Bearer {token.get_secret_value()}".encode()):
        raise Refusal(401, "unauthorized", "missing or wrong bearer token")


class BillingEndpoint(HttpFunction[Reply]):
    """A billing function: ``work`` answers, a Refusal is its status and metric outcome."""

    runtime: BillingRuntime
    #: The level of the line of a 2xx answer.
    success_level = logging.INFO

    def __init__(self, runtime: BillingRuntime, work: Work, max_body_bytes: int) -> None:
        super().__init__(runtime, max_body_bytes)
        self.work = work
        # LOG_DELIVERIES=failures: no line per answered request (an entitlement check is
        # on its caller's critical path), one for every answer that is not 2xx.
        self.log_successes = runtime.settings.log_deliveries is LogDeliveries.ALL

    async def respond(self, request: HttpRequest, path: str) -> Reply:
        """A POST within the limits (the shell's ``post_body``), answered by ``work``."""
        return await self.answer(request, await self.post_body(request))

    async def answer(self, request: HttpRequest, body: bytes) -> Reply:
        """``work``'s answer, or its refusal."""
        try:
            status, payload = await self.work(request, body)
        except Refusal as refusal:
            retry = {"Retry-After": str(refusal.retry_after)} if refusal.retry_after else None
            return self.refusal(refusal.status, refusal.outcome, refusal.message, retry)
        return Reply(status, payload, "ok")

    def refusal(
        self, status: int, reason: str, detail: str, headers: dict[str, str] | None = None
    ) -> Reply:
        """``{"error": detail}``, counted under outcome ``reason``."""
        return Reply(status, {"error": detail}, reason, headers=headers or {})

    def refused(self, refusal: Refused) -> Reply:
        """A refusal of the shell, counted under its reason as the outcome."""
        reason = refusal.reason
        return self.refusal(reason.status, reason.value, refusal.detail, refusal.headers)

    def record(self, reply: Reply, seconds: float) -> None:
        """Count the request by outcome and log one line."""
        metrics = self.runtime.metrics
        metrics.count(reply.outcome)
        if self.runtime.pusher is not None:
            self.runtime.pusher.request_done()
        if reply.status >= 500:
            level = logging.WARNING
        elif reply.status >= 300:
            level = logging.INFO
        elif self.log_successes:
            level = self.success_level
        else:
            return
        if log.isEnabledFor(level):
            log.log(
                level,
                "%s status=%d outcome=%s ms=%.1f",
                metrics.function,
                reply.status,
                reply.outcome,
                seconds * 1000,
            )


def make_usage_function(settings: Settings, usage: UsageSettings | None = None) -> BillingEndpoint:
    """POST one usage record (object) or several (array): 202 once stored in USAGE."""
    usage = usage or load_model(UsageSettings)
    usage_stream = settings.model_copy(update={"nats_stream": USAGE_STREAM})
    publisher = JetStreamPublisher(usage_stream)
    runtime = BillingRuntime("billing_usage", settings, publisher)
    many = TypeAdapter(list[UsageRecord])

    async def work(request: HttpRequest, body: bytes) -> tuple[int, Any]:
        check_bearer(request, usage.api_token)
        payload = read_json(body)
        if isinstance(payload, list):
            if len(payload) > usage.max_records:
                raise Refusal(413, "too_many", f"more than {usage.max_records} records")
            try:
                records = many.validate_python(payload)
            except ValidationError as exc:
                raise Refusal(422, "invalid", _validation_message(exc)) from None
            unique_ids(records)
        else:
            records = [parse(UsageRecord, payload)]
        stored = duplicates = 0
        for record in records:
            try:
                ack = await record_usage(publisher, record)
            except PublishError as exc:
                raise Refusal(
                    503, exc.reason.value, "usage not stored, retry with the same ids",
                    retry_after=settings.retry_after_seconds,
                ) from exc  # fmt: skip
            duplicates += ack.duplicate
            stored += not ack.duplicate
            runtime.metrics.usage_records.labels("duplicate" if ack.duplicate else "stored").inc()
        return 202, {"stored": stored, "duplicates": duplicates, "ids": [r.id for r in records]}

    return BillingEndpoint(runtime, work, settings.max_body_bytes)


def _stripe_refusal(exc: CheckoutError) -> Refusal:
    status = {
        StripeFailure.REJECTED: 422,
        StripeFailure.NOT_SOLD: 422,
        StripeFailure.REDIRECT_NOT_ALLOWED: 422,
        StripeFailure.MISCONFIGURED: 500,
        StripeFailure.UNAVAILABLE: 503,
    }[exc.failure]
    return Refusal(status, exc.failure.value, exc.message, 30 if status == 503 else None)


@dataclass(frozen=True)
class StripeParts:
    """Settings, tier config and client a Stripe-facing function shares across requests."""

    settings: StripeSettings
    config: TierConfig

    @cached_property
    def client(self) -> Any:
        """The Stripe client, built on the first request that passes validation.

        Not at start: stripe-python imports httpx and ~650 modules (~0.9 s of a cold
        start), and neither loading the function nor ``/readyz`` needs them. Building it
        later loses no check: it opens no connection and takes only settings validated
        at start (key, API base, retries). One event loop thread: built once.
        """
        return stripe_client(self.settings)


def stripe_parts(settings: StripeSettings | None = None) -> StripeParts:
    """Read settings and the tier file once at start (the client on first use)."""
    settings = settings or load_model(StripeSettings)
    try:
        config = TierConfig.load(settings.billing_tiers_file)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"tier config: {str(exc).splitlines()[0]}") from None
    return StripeParts(settings, config)


def _stripe_function(
    name: str, settings: Settings, create: Callable[[Any], Awaitable[SessionLink]]
) -> BillingEndpoint:
    """A function answering a POST with 200 {id, url} of the session ``create(json)`` made."""

    async def work(_request: HttpRequest, payload: bytes) -> tuple[int, Any]:
        try:
            link = await create(read_json(payload))
        except CheckoutError as exc:
            raise _stripe_refusal(exc) from exc
        return 200, {"id": link.id, "url": link.url}

    limit = min(STRIPE_REQUEST_MAX_BYTES, settings.max_body_bytes)
    return BillingEndpoint(BillingRuntime(name, settings), work, limit)


def make_checkout_function(settings: Settings, parts: StripeParts | None = None) -> BillingEndpoint:
    """POST {customer_id, tier}: 200 {id, url} of a Checkout Session selling that tier."""
    stripe = parts or stripe_parts()

    async def create(payload: Any) -> SessionLink:
        body = parse(CheckoutRequest, payload)
        return await create_checkout_session(stripe.client, stripe.config, stripe.settings, body)

    return _stripe_function("billing_checkout", settings, create)


def make_portal_function(settings: Settings, parts: StripeParts | None = None) -> BillingEndpoint:
    """POST {customer_id}: 200 {id, url} of a Customer Portal session."""
    stripe = parts or stripe_parts()

    async def create(payload: Any) -> SessionLink:
        body = parse(PortalRequest, payload)
        return await create_portal_session(stripe.client, stripe.settings, body)

    return _stripe_function("billing_portal", settings, create)
