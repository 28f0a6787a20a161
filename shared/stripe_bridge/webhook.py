"""A webhook function: verify a Stripe delivery, then ``ingest`` it; answer in HTTP.

Read in request order: ``http.HttpFunction.handle`` (probes, method, body cap) →
``WebhookFunction.answer`` (signature, JSON, envelope, served type) → ``ingest.ingest``
(claim → publish → PubAck → done) → ``reply_for`` (the result as status, body, headers).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from functools import partial
from typing import Any

from pydantic import ValidationError
from starlette.requests import Request

from . import registry
from .config import ConfigError, LogDeliveries, Settings
from .envelope import AmbiguousBody, MalformedBody, StripeEvent, parse_body
from .http import BodyReader, HttpFunction, Reply, start
from .ingest import Ingested, IngestStatus, Runtime, ingest
from .metrics import UNKNOWN_TYPE
from .signature import SignatureError, verify

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "stripe-signature"


@dataclass
class Outcome(Reply):
    """How one delivery ended: the HTTP answer plus the event it was about, if known."""

    event_type: str = UNKNOWN_TYPE
    event_id: str | None = None


def _rejected(reason: str, detail: str, status: int = 400, **kw: Any) -> Outcome:
    return Outcome(status, {"error": reason, "detail": detail}, "rejected", reason, **kw)


class WebhookFunction(HttpFunction[Outcome]):
    """Every request of one function; ``serves`` None means every event type."""

    runtime: Runtime

    def __init__(
        self,
        runtime: Runtime,
        serves: frozenset[str] | None,
        endpoint_path: str = "/",
        reader: BodyReader | None = None,
    ) -> None:
        settings = runtime.settings
        reader = reader or BodyReader(settings.max_body_bytes, settings.body_read_timeout_seconds)
        super().__init__(runtime, settings.max_body_bytes, reader)
        self.serves = serves
        # A Stripe endpoint URL has one path; deliveries to any other are refused.
        self.endpoint_path = endpoint_path.rstrip("/")
        self.log_successes = settings.log_deliveries is LogDeliveries.ALL

    def refusal(
        self, status: int, reason: str, detail: str, headers: dict[str, str] | None = None
    ) -> Outcome:
        """A refused delivery (counted under ``reason``; ``failed`` when it is a 5xx)."""
        if status >= 500:
            retry = {"Retry-After": str(self.runtime.settings.retry_after_seconds)}
            return Outcome(
                status, {"error": reason}, "failed", reason, {**retry, **(headers or {})}
            )
        return _rejected(reason, detail, status, headers=headers or {})

    async def deliver(self, request: Request) -> Outcome:
        """The shell's delivery on the endpoint's path (404 elsewhere), counted in flight."""
        metrics = self.runtime.metrics
        metrics.inflight.inc()
        try:
            if request.url.path.rstrip("/") != self.endpoint_path:
                return _rejected("not_found", "Stripe deliveries go to the endpoint URL", 404)
            return await super().deliver(request)
        finally:
            metrics.inflight.dec()

    def record(self, reply: Outcome, seconds: float) -> None:
        """Count the delivery, log one line, let the pusher push."""
        self.runtime.metrics.delivered(reply.event_type, reply.outcome, reply.reason, seconds)
        level = logging.WARNING if reply.status >= 500 else logging.INFO
        if (self.log_successes or reply.status >= 300) and log.isEnabledFor(level):
            log.log(
                level,
                f"webhook status={reply.status} outcome={reply.outcome} "
                f"reason={reply.reason or '-'} event_id={reply.event_id or '-'} "
                f"type={reply.event_type} ms={seconds * 1000:.1f}",
            )
        if self.runtime.pusher is not None:
            self.runtime.pusher.request_done()

    async def answer(self, request: Request, body: bytes) -> Outcome:
        """Verify, parse and check the delivery; ingest it."""
        settings = self.runtime.settings
        metrics = self.runtime.metrics
        try:
            signed_at = verify(
                request.headers.get(SIGNATURE_HEADER),
                body,
                settings.secrets(),
                settings.stripe_signature_tolerance,
            )
        except SignatureError as exc:
            if exc.timestamp is not None:  # authentic, but out of tolerance
                metrics.clock_skew.set(time.time() - exc.timestamp)
            metrics.signature_failures.labels(exc.failure.value).inc()
            return _rejected(exc.failure.value, "Stripe-Signature did not verify")
        metrics.clock_skew.set(time.time() - signed_at)
        try:
            raw = parse_body(body)
        except AmbiguousBody as exc:
            return _rejected("ambiguous_json", str(exc))
        except MalformedBody as exc:
            return _rejected("malformed_json", str(exc))
        try:
            event = StripeEvent.model_validate(raw)
        except ValidationError as exc:
            fields = (
                ",".join(sorted({str(e["loc"][0]) for e in exc.errors() if e["loc"]})) or "body"
            )
            return _rejected("not_a_stripe_event", f"invalid or missing: {fields}")
        if self.serves is not None and event.type not in self.serves:
            return _rejected(
                "unsupported_event_type",
                f"this function serves {', '.join(sorted(self.serves))}",
                event_type=event.type,
                event_id=event.id,
            )
        # The body, not ``raw``: it is published as it was signed, not serialised again.
        return reply_for(await ingest(self.runtime, event, body), self.runtime.settings)


def reply_for(result: Ingested, settings: Settings) -> Outcome:
    """What ``ingest``'s result means in HTTP: 200, 409, 413 or 503 (``Retry-After``)."""
    status, body = {
        IngestStatus.PUBLISHED: (
            200,
            {
                "status": "published",
                "id": result.event_id,
                "stream": result.stream,
                "seq": result.seq,
            },
        ),
        IngestStatus.DUPLICATE: (200, {"status": "duplicate", "id": result.event_id}),
        IngestStatus.IN_PROGRESS: (
            409,
            {
                "error": "in_progress",
                "detail": "another delivery of this event is being stored; retry later",
            },
        ),
        IngestStatus.FAILED: (503, {"error": result.reason}),
        IngestStatus.REJECTED: (
            413,
            {"error": result.reason, "detail": "over the NATS server's max_payload"},
        ),
    }[result.status]
    headers = {"Retry-After": str(settings.retry_after_seconds)} if status in (409, 503) else {}
    return Outcome(
        status,
        body,
        result.status.value,
        result.reason,
        headers,
        result.event_type,
        result.event_id,
    )


def serves_for(function_name: str) -> frozenset[str] | None:
    """The event types a function accepts; None for the catch-all."""
    if function_name == registry.CATCH_ALL:
        return None
    return frozenset({registry.by_function(function_name).name})


def webhook_function(function_name: str, settings: Settings) -> WebhookFunction:
    """The webhook function ``functions/<function_name>`` runs, on ``settings``."""
    if not settings.stripe_webhook_secret:
        # Settings allows it (the CLI tools need no secret); a webhook function without one
        # could only refuse every delivery.
        raise ConfigError("invalid configuration: STRIPE_WEBHOOK_SECRET is not set")
    return WebhookFunction(Runtime(settings, function_name), serves_for(function_name))


def make_function(function_name: str) -> WebhookFunction:
    """The function of ``functions/<function_name>/main.py`` (its target is ``.target``)."""
    return start(function_name, partial(webhook_function, function_name))
