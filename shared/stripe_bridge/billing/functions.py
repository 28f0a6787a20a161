"""HTTP targets of the billing functions: record usage, create Checkout and Portal sessions.

Each is an async functions-framework target like the webhook functions (served by
``stripe-bridge serve``), with ``GET /healthz`` and ``GET /metrics``. Their modules under
``functions/`` are generated from ``BILLING_FUNCTIONS`` by ``stripe-bridge generate``.

Statuses: 200/202 done; 400 body is not JSON; 401 missing/wrong bearer token; 405 not
POST; 413 body too large; 422 fields invalid, a redirect URL of an origin not allowed or
Stripe refused the request; 500 our Stripe key is refused; 503 NATS or Stripe unavailable
(with Retry-After).
"""

from __future__ import annotations

import hmac
import json
import logging
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, TypeVar

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, generate_latest
from pydantic import BaseModel, Field, SecretStr, TypeAdapter, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from ..config import ConfigError, Settings, load_model, load_settings
from ..function import configure_logging
from ..jetstream import JetStreamPublisher, PublishError
from ..push import MetricsPusher
from .checkout import (
    CheckoutError,
    CheckoutRequest,
    PortalRequest,
    StripeFailure,
    StripeSettings,
    create_checkout_session,
    create_portal_session,
    stripe_client,
)
from .tiers import TierConfig
from .usage import USAGE_STREAM, UsageRecord, record_usage

log = logging.getLogger(__name__)

Handler = Callable[[Request], Awaitable[Response]]
ModelT = TypeVar("ModelT", bound=BaseModel)


class UsageSettings(BaseSettings):
    """Settings of the usage function on top of the bridge's NATS settings."""

    model_config = SettingsConfigDict(env_prefix="USAGE_", case_sensitive=False, extra="ignore")

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

    def __init__(self, function: str, settings: Settings | None = None) -> None:
        self.metrics = BillingFunctionMetrics(function)
        self.publisher: JetStreamPublisher | None = None
        self.pusher = (
            MetricsPusher(
                settings.pushgateway_url,
                self.metrics.registry,
                function=function,
                instance=settings.instance(),
                environment=settings.environment,
                min_interval=settings.pushgateway_min_interval,
            )
            if settings is not None and settings.pushgateway_url
            else None
        )

    def request_done(self) -> None:
        """Note a handled request: the pusher (if any) pushes soon, off the response path."""
        if self.pusher is not None:
            self.pusher.request_done()

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


async def read_json(request: Request, max_bytes: int) -> Any:
    """The request's JSON body, or a Refusal (405, 413, 400)."""
    if request.method != "POST":
        raise Refusal(405, "method_not_allowed", "use POST")
    body = await request.body()
    if len(body) > max_bytes:
        raise Refusal(413, "too_large", f"body larger than {max_bytes} bytes")
    try:
        return json.loads(body)
    except ValueError:
        raise Refusal(400, "bad_json", "body is not JSON") from None


def parse(model: type[ModelT], payload: Any) -> ModelT:
    """``payload`` as ``model``, or a 422 Refusal naming the invalid fields."""
    try:
        return model.model_validate(payload)
    except ValidationError as exc:
        raise Refusal(422, "invalid", _validation_message(exc)) from None


def check_bearer(request: Request, token: SecretStr | None) -> None:
    """401 unless the request carries ``token`` (when one is configured)."""
    if token is None:
        return
    sent = request.headers.get("authorization", "")
    if not hmac.compare_digest(sent.encode(), f"Bearer {token.get_secret_value()}".encode()):
        raise Refusal(401, "unauthorized", "missing or wrong bearer token")


def wrap(runtime: BillingRuntime, work: Callable[[Request], Awaitable[tuple[int, Any]]]) -> Any:
    """The target: health and metrics endpoints, then ``work``, with refusals as statuses."""
    metrics = runtime.metrics

    async def handle(request: Request) -> Response:
        if request.method == "GET" and request.url.path.rstrip("/").endswith("/healthz"):
            return JSONResponse({"status": "ok"})
        if request.method == "GET" and request.url.path.rstrip("/").endswith("/metrics"):
            return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)
        try:
            status, body = await work(request)
        except Refusal as refusal:
            metrics.count(refusal.outcome)
            runtime.request_done()
            if refusal.status >= 500:
                log.warning("%s: %s %s", metrics.function, refusal.outcome, refusal.message)
            headers = {"Retry-After": str(refusal.retry_after)} if refusal.retry_after else None
            return JSONResponse({"error": refusal.message}, refusal.status, headers=headers)
        metrics.count("ok")
        runtime.request_done()
        return JSONResponse(body, status)

    handle.runtime = runtime  # type: ignore[attr-defined]
    return handle


def make_usage_function(
    settings: Settings | None = None, usage: UsageSettings | None = None
) -> Handler:
    """POST one usage record (object) or several (array): 202 once stored in USAGE."""
    settings = settings or load_settings()
    usage = usage or load_model(UsageSettings)
    runtime = BillingRuntime("billing_usage", settings)
    usage_stream = settings.model_copy(update={"nats_stream": USAGE_STREAM})
    runtime.publisher = JetStreamPublisher(usage_stream)
    many = TypeAdapter(list[UsageRecord])

    async def work(request: Request) -> tuple[int, Any]:
        check_bearer(request, usage.api_token)
        payload = await read_json(request, settings.max_body_bytes)
        if isinstance(payload, list):
            if len(payload) > usage.max_records:
                raise Refusal(413, "too_many", f"more than {usage.max_records} records")
            try:
                records = many.validate_python(payload)
            except ValidationError as exc:
                raise Refusal(422, "invalid", _validation_message(exc)) from None
        else:
            records = [parse(UsageRecord, payload)]
        stored = duplicates = 0
        assert runtime.publisher is not None
        for record in records:
            try:
                ack = await record_usage(runtime.publisher, record)
            except PublishError as exc:
                raise Refusal(
                    503, exc.failure.value, "usage not stored, retry with the same ids",
                    retry_after=settings.retry_after_seconds,
                ) from exc  # fmt: skip
            duplicates += ack.duplicate
            stored += not ack.duplicate
            runtime.metrics.usage_records.labels("duplicate" if ack.duplicate else "stored").inc()
        return 202, {"stored": stored, "duplicates": duplicates, "ids": [r.id for r in records]}

    return wrap(runtime, work)  # type: ignore[no-any-return]


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
    client: Any


def stripe_parts(settings: StripeSettings | None = None) -> StripeParts:
    """Read settings and the tier file once at start."""
    settings = settings or load_model(StripeSettings)
    try:
        config = TierConfig.load(settings.billing_tiers_file)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"tier config: {str(exc).splitlines()[0]}") from None
    return StripeParts(settings, config, stripe_client(settings))


def make_checkout_function(parts: StripeParts | None = None) -> Handler:
    """POST {customer_id, tier}: 200 {id, url} of a Checkout Session selling that tier."""
    parts = parts or stripe_parts()
    runtime = BillingRuntime("billing_checkout", load_settings())

    async def work(request: Request) -> tuple[int, Any]:
        body = parse(CheckoutRequest, await read_json(request, 64 * 1024))
        try:
            link = await create_checkout_session(parts.client, parts.config, parts.settings, body)
        except CheckoutError as exc:
            raise _stripe_refusal(exc) from exc
        return 200, {"id": link.id, "url": link.url}

    return wrap(runtime, work)  # type: ignore[no-any-return]


def make_portal_function(parts: StripeParts | None = None) -> Handler:
    """POST {customer_id}: 200 {id, url} of a Customer Portal session."""
    parts = parts or stripe_parts()
    runtime = BillingRuntime("billing_portal", load_settings())

    async def work(request: Request) -> tuple[int, Any]:
        body = parse(PortalRequest, await read_json(request, 64 * 1024))
        try:
            link = await create_portal_session(parts.client, parts.settings, body)
        except CheckoutError as exc:
            raise _stripe_refusal(exc) from exc
        return 200, {"id": link.id, "url": link.url}

    return wrap(runtime, work)  # type: ignore[no-any-return]


class Need(StrEnum):
    """What a billing function's deployment must give it (``stripe_bridge.knative`` reads it)."""

    #: Publishes to NATS: NATS_URL and the publisher's credentials.
    NATS = "nats"
    #: Callers must authenticate: USAGE_API_TOKEN from a Secret.
    USAGE_TOKEN = "usage_token"
    #: Calls Stripe's API: STRIPE_API_KEY from a Secret, the Checkout/Portal URLs; no caller
    #: authentication of its own, so its Service is cluster-local.
    STRIPE = "stripe"


@dataclass(frozen=True)
class BillingFunction:
    """A non-webhook function under ``functions/`` and the factory of its target."""

    name: str
    factory: str
    summary: str
    needs: frozenset[Need] = frozenset()

    @property
    def service_name(self) -> str:
        """Its Knative Service (DNS names take no underscores)."""
        return self.name.replace("_", "-")


#: The billing functions; ``stripe-bridge generate`` writes ``functions/<name>/main.py`` and
#: ``stripe-bridge knative render`` a Knative Service for each.
BILLING_FUNCTIONS: tuple[BillingFunction, ...] = (
    BillingFunction(
        "billing_usage",
        "make_usage_function",
        "record usage into USAGE",
        frozenset({Need.NATS, Need.USAGE_TOKEN}),
    ),
    BillingFunction(
        "billing_checkout",
        "make_checkout_function",
        "Checkout Session for a tier",
        frozenset({Need.STRIPE}),
    ),
    BillingFunction(
        "billing_portal",
        "make_portal_function",
        "Customer Portal session",
        frozenset({Need.STRIPE}),
    ),
)


def build(factory: Callable[[], Handler], name: str) -> Handler:
    """Call ``factory`` at import time; invalid configuration exits 2 with one line."""
    try:
        configure_logging(load_settings())
        return factory()
    except ConfigError as exc:
        print(f"stripe-bridge {name}: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


def function_module(function: BillingFunction) -> str:
    """The source of ``functions/<name>/main.py`` for a billing function."""
    return f'''"""Knative function: {function.summary} (see docs/billing.md).

Generated from stripe_bridge.billing.functions by `stripe-bridge generate`; do not edit.
Serve it with `stripe-bridge serve --source <this file>` (as the image does): it drains
NATS and pushes the final metrics on SIGTERM, which functions-framework would skip.
"""

from stripe_bridge.billing.functions import build, {function.factory}

handle = build({function.factory}, "{function.name}")
'''


def billing_function_files(root: Path) -> dict[Path, str]:
    """``functions/<name>/main.py`` of every billing function, by path under ``root``."""
    return {root / "functions" / f.name / "main.py": function_module(f) for f in BILLING_FUNCTIONS}
