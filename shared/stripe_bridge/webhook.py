"""A webhook function: one Stripe delivery, from request to reply, in ``respond``.

The shell (``http.HttpFunction.handle``) answers the probes, then calls ``respond``, which
reads in request order: the endpoint's path → the body (``post_body``: POST, size, time) →
``Stripe-Signature`` → strict JSON → the Stripe event envelope → the served type →
``ingest.ingest`` (claim → publish → PubAck → done) → the result as HTTP (``reply_for``).
Every step that refuses raises ``Refused`` with its ``Reason``; ``refused`` makes the reply,
``record`` counts and logs it, once per request.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from functools import partial

from pydantic import ValidationError

from . import registry
from .asgi import HttpRequest
from .config import ConfigError, LogDeliveries, Settings
from .envelope import AmbiguousBody, MalformedBody, StripeEvent, parse_body
from .http import BodyReader, HttpFunction, Reply, start
from .ingest import Ingested, IngestStatus, ingest
from .reasons import UNKNOWN_TYPE, Reason, Refused
from .runtime import Runtime
from .signature import SignatureError, verify

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "stripe-signature"


@dataclass
class Outcome(Reply):
    """How one delivery ended: the HTTP answer plus the event it was about, if known."""

    event_type: str = UNKNOWN_TYPE
    event_id: str | None = None


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
        reader = reader or BodyReader.for_settings(settings)
        super().__init__(runtime, settings.max_body_bytes, reader)
        self.serves = serves
        # A Stripe endpoint URL has one path; deliveries to any other are refused.
        self.endpoint_path = endpoint_path.rstrip("/")
        self.log_successes = settings.log_deliveries is LogDeliveries.ALL
        self.retry_after = {"Retry-After": str(settings.retry_after_seconds)}

    async def respond(self, request: HttpRequest, path: str) -> Outcome:
        """One delivery, step by step, counted in flight; a refusal raises Refused."""
        metrics = self.runtime.metrics
        metrics.inflight.inc()
        try:
            if path != self.endpoint_path:  # before the method: 404 whatever it is
                raise Refused(Reason.NOT_FOUND, "Stripe deliveries go to the endpoint URL")
            body = await self.post_body(request)
            self._verify(request.header(SIGNATURE_HEADER), body)
            event = _parse_event(body)
            if self.serves is not None and event.type not in self.serves:
                served = ", ".join(sorted(self.serves))
                raise Refused(
                    Reason.UNSUPPORTED_EVENT_TYPE,
                    f"this function serves {served}",
                    event_type=event.type,
                    event_id=event.id,
                )
            # The body, not a re-serialisation: it is published as it was signed.
            return self.reply_for(await ingest(self.runtime, event, body))
        finally:
            metrics.inflight.dec()

    def _verify(self, header: str | None, body: bytes) -> None:
        """Refuse unless ``header`` signs ``body``; keep the clock-skew gauge current."""
        settings = self.runtime.settings
        metrics = self.runtime.metrics
        try:
            signed_at = verify(
                header, body, settings.secrets(), settings.stripe_signature_tolerance
            )
        except SignatureError as exc:
            if exc.timestamp is not None:  # authentic, but out of tolerance
                metrics.clock_skew.set(time.time() - exc.timestamp)
            metrics.signature_failures.labels(exc.reason.value).inc()
            raise Refused(exc.reason, "Stripe-Signature did not verify") from None
        metrics.clock_skew.set(time.time() - signed_at)

    def reply_for(self, result: Ingested) -> Outcome:
        """What ``ingest``'s result means in HTTP: 200, 409, or its refusal (413, 503)."""
        event_type, event_id = result.event_type, result.event_id
        if result.reason is not None:  # FAILED (503) or REJECTED (event_too_large, 413)
            detail = _INGEST_DETAIL.get(result.reason, "")
            raise Refused(result.reason, detail, event_type=event_type, event_id=event_id)
        outcome = result.status.value
        if result.status is IngestStatus.IN_PROGRESS:
            detail = "another delivery of this event is being stored; retry later"
            return Outcome(
                status=409,
                body={"error": "in_progress", "detail": detail},
                outcome=outcome,
                headers=self.retry_after,
                event_type=event_type,
                event_id=event_id,
            )
        body: dict[str, object]
        if result.status is IngestStatus.PUBLISHED:
            body = {
                "status": "published",
                "id": result.event_id,
                "stream": result.stream,
                "seq": result.seq,
            }
        else:
            body = {"status": "duplicate", "id": result.event_id}
        return Outcome(
            status=200, body=body, outcome=outcome, event_type=event_type, event_id=event_id
        )

    def refused(self, refusal: Refused) -> Outcome:
        """The refusal as HTTP: 4xx with its detail; 5xx with ``Retry-After`` (Stripe retries)."""
        reason = refusal.reason
        if reason.status >= 500:
            body = {"error": reason.value}
            headers = {**self.retry_after, **refusal.headers}
        else:
            body = {"error": reason.value, "detail": refusal.detail}
            headers = refusal.headers
        return Outcome(
            status=reason.status,
            body=body,
            outcome=reason.outcome,
            reason=reason.value,
            headers=headers,
            event_type=refusal.event_type,
            event_id=refusal.event_id,
        )

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


#: The detail of a refusal ``ingest`` reports (a 5xx sends none).
_INGEST_DETAIL = {Reason.EVENT_TOO_LARGE: "over the NATS server's max_payload"}


def _parse_event(body: bytes) -> StripeEvent:
    """``body`` as a Stripe event: strict JSON, then the envelope without coercion."""
    try:
        raw = parse_body(body)
    except AmbiguousBody as exc:
        raise Refused(Reason.AMBIGUOUS_JSON, str(exc)) from None
    except MalformedBody as exc:
        raise Refused(Reason.MALFORMED_JSON, str(exc)) from None
    try:
        return StripeEvent.model_validate(raw)
    except ValidationError as exc:
        fields = ",".join(sorted({str(e["loc"][0]) for e in exc.errors() if e["loc"]})) or "body"
        raise Refused(Reason.NOT_A_STRIPE_EVENT, f"invalid or missing: {fields}") from None


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
    """The function of ``functions/<function_name>/main.py`` (its target is ``.handle``)."""
    return start(function_name, partial(webhook_function, function_name))
