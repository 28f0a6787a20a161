"""The HTTP surface of a function: Stripe webhooks, health, readiness and metrics."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import ValidationError
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response

from .config import Settings
from .envelope import MalformedBody, StripeEvent, parse_body
from .idempotency import ClaimState, IdempotencyError, IdempotencyStore, make_store
from .jetstream import JetStreamPublisher, MessageTooLarge, PublishError
from .message import build_message
from .metrics import UNKNOWN_TYPE, BridgeMetrics, served_event_types
from .push import MetricsPusher
from .signature import SignatureError, verify

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "stripe-signature"
#: How long a body still arriving at SIGTERM may take before it is answered 503.
STOPPING_BODY_GRACE_SECONDS = 2.0


class Runtime:
    """Process-wide parts: settings, metrics, idempotency store, NATS publisher, pusher.

    Nothing connects at construction; the NATS connection opens on first use.
    """

    def __init__(
        self,
        settings: Settings,
        function_name: str,
        metrics: BridgeMetrics | None = None,
        store: IdempotencyStore | None = None,
    ) -> None:
        self.settings = settings
        self.function_name = settings.function_name or function_name
        self.metrics = metrics or BridgeMetrics()
        self.store = store or make_store(settings)
        # Named after the function, so that the server's connz tells the functions apart.
        named = settings.model_copy(update={"function_name": self.function_name})
        self.publisher = JetStreamPublisher(named, self.metrics.set_nats_connected)
        self.metrics.preinitialise(served_event_types(function_name), self.store.backend)
        self.pusher = (
            MetricsPusher(
                settings.pushgateway_url,
                self.metrics.registry,
                function=self.function_name,
                instance=settings.instance(),
                environment=settings.environment,
                min_interval=settings.pushgateway_min_interval,
                failures=self.metrics.push_failures,
            )
            if settings.pushgateway_url
            else None
        )
        self.stopping = False
        # Deadlines of the bodies being read right now; a shutdown moves them to now.
        self._body_reads: set[asyncio.Timeout] = set()

    def begin_shutdown(self) -> None:
        """SIGTERM arrived: bodies still arriving get STOPPING_BODY_GRACE more seconds.

        A client that is sending finishes (and is answered as usual); a stalled one is
        answered 503 instead of holding the shutdown (nothing is claimed before the body).
        Safe to call from a signal handler on the event loop's thread.
        """
        self.stopping = True
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        loop.call_soon_threadsafe(self._shorten_body_reads)

    def _shorten_body_reads(self) -> None:
        for deadline in self._body_reads:
            deadline.reschedule(min(deadline.when() or 0.0, self._stopping_deadline()))

    def _stopping_deadline(self) -> float:
        return asyncio.get_running_loop().time() + STOPPING_BODY_GRACE_SECONDS

    async def read_body(self, request: Request) -> bytes | None:
        """The body, or None once it is known to exceed MAX_BODY_BYTES.

        Raises TimeoutError when it takes longer than BODY_READ_TIMEOUT_SECONDS (or the
        grace after SIGTERM), ClientDisconnect when the client leaves.
        """
        deadline = asyncio.get_running_loop().time() + self.settings.body_read_timeout_seconds
        if self.stopping:
            deadline = min(deadline, self._stopping_deadline())
        async with asyncio.timeout_at(deadline) as timeout:
            self._body_reads.add(timeout)
            try:
                return await _read_limited(request, self.settings.max_body_bytes)
            finally:
                self._body_reads.discard(timeout)

    async def close(self) -> None:
        """Drain NATS, push metrics a last time, close the store (SIGTERM path)."""
        await self.publisher.close()
        if self.pusher is not None:
            await self.pusher.final_push()
        await self.store.close()


@dataclass
class Outcome:
    """How one delivery ended: the HTTP answer plus what metrics and logs need."""

    status: int
    body: dict[str, Any]
    outcome: str
    reason: str = ""
    event_type: str = UNKNOWN_TYPE
    event_id: str | None = None
    headers: dict[str, str] = field(default_factory=dict)


def _rejected(reason: str, detail: str, status: int = 400, **kw: Any) -> Outcome:
    return Outcome(status, {"error": reason, "detail": detail}, "rejected", reason, **kw)


class WebhookHandler:
    """Handles every request of one function; ``serves`` None means every event type."""

    def __init__(
        self, runtime: Runtime, serves: frozenset[str] | None, endpoint_path: str = "/"
    ) -> None:
        self.runtime = runtime
        self.serves = serves
        # A Stripe endpoint URL has one path; deliveries to any other are refused.
        self.endpoint_path = endpoint_path.rstrip("/")

    def endpoint(self) -> Callable[[Request], Awaitable[Response]]:
        """This handler as a coroutine function.

        functions-framework and Starlette tell async targets apart with
        ``inspect.iscoroutinefunction``, which is false for a callable instance.
        """

        async def endpoint(request: Request) -> Response:
            return await self(request)

        return endpoint

    async def __call__(self, request: Request) -> Response:
        """Handle one request: route by path and method."""
        path = request.url.path.rstrip("/")
        if path in ("/healthz", "/readyz", "/metrics"):
            if request.method not in ("GET", "HEAD"):
                return _method_not_allowed("GET")
            return await self._probe(path)
        return await self._deliver(request, path == self.endpoint_path)

    async def _probe(self, path: str) -> Response:
        if path == "/healthz":
            return JSONResponse({"status": "alive"})
        if path == "/metrics":
            return Response(
                generate_latest(self.runtime.metrics.registry), media_type=CONTENT_TYPE_LATEST
            )
        if await self.runtime.publisher.ready():
            return JSONResponse({"status": "ready"})
        return JSONResponse({"status": "not_ready", "error": "nats_or_stream_unavailable"}, 503)

    async def _deliver(self, request: Request, endpoint: bool) -> Response:
        metrics = self.runtime.metrics
        started = time.perf_counter()
        metrics.inflight.inc()
        try:
            if endpoint:
                result = await self._handle(request)
            else:
                result = _rejected("not_found", "Stripe deliveries go to the endpoint URL", 404)
        finally:
            metrics.inflight.dec()
        elapsed = time.perf_counter() - started
        metrics.webhooks.labels(result.event_type, result.outcome, result.reason).inc()
        metrics.request_seconds.labels(result.outcome).observe(elapsed)
        log.log(
            logging.WARNING if result.status >= 500 else logging.INFO,
            "webhook status=%d outcome=%s reason=%s event_id=%s type=%s ms=%.1f",
            result.status,
            result.outcome,
            result.reason or "-",
            result.event_id or "-",
            result.event_type,
            elapsed * 1000,
        )
        if self.runtime.pusher is not None:
            self.runtime.pusher.request_done()
        return JSONResponse(result.body, result.status, headers=result.headers)

    async def _handle(self, request: Request) -> Outcome:
        settings = self.runtime.settings
        if request.method != "POST":
            # Through _deliver like any refusal, so that it is counted and logged.
            return _rejected("method_not_allowed", "POST webhooks here", 405, headers=_ALLOW_POST)
        try:
            body = await self.runtime.read_body(request)
        except ClientDisconnect:
            # Nobody reads this answer; 499 (nginx's "client closed request") in log and metrics.
            return _rejected("client_disconnected", "the client left mid-body", 499)
        except TimeoutError:
            # The unread rest of the body cannot be skipped: close the connection.
            close = {"Connection": "close"}
            if self.runtime.stopping:
                retry = {"Retry-After": str(settings.retry_after_seconds), **close}
                return Outcome(
                    503, {"error": "shutting_down"}, "failed", "shutting_down", headers=retry
                )
            limit = settings.body_read_timeout_seconds
            detail = f"body not received within {limit:g} s"
            return _rejected("body_read_timeout", detail, 408, headers=close)
        if body is None:
            return _rejected("body_too_large", f"limit is {settings.max_body_bytes} bytes", 413)
        try:
            signed_at = verify(
                request.headers.get(SIGNATURE_HEADER),
                body,
                settings.secrets(),
                settings.stripe_signature_tolerance,
            )
        except SignatureError as exc:
            if exc.timestamp is not None:
                self.runtime.metrics.clock_skew.set(time.time() - exc.timestamp)
            self.runtime.metrics.signature_failures.labels(exc.failure.value).inc()
            return _rejected(exc.failure.value, "Stripe-Signature did not verify")
        self.runtime.metrics.clock_skew.set(time.time() - signed_at)
        try:
            raw = parse_body(body)
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
        return await ingest(self.runtime, event, raw)


async def ingest(runtime: Runtime, event: StripeEvent, raw: dict[str, Any]) -> Outcome:
    """Store one already-trusted event exactly once: claim, publish, await PubAck, mark done.

    The webhook path calls this after verifying the signature; replay and import call it
    directly for events fetched from Stripe's API or an export.
    """
    metrics = runtime.metrics
    retry = {"Retry-After": str(runtime.settings.retry_after_seconds)}

    def outcome(status: int, body: dict[str, Any], name: str, reason: str = "") -> Outcome:
        headers = retry if status in (409, 503) else {}
        return Outcome(status, body, name, reason, event.type, event.id, headers)

    try:
        claim = await runtime.store.claim(event.id)
    except IdempotencyError:
        metrics.idempotency_errors.labels(runtime.store.backend, "claim").inc()
        reason = "idempotency_unavailable"
        return outcome(503, {"error": reason}, "failed", reason)
    if claim.state is ClaimState.DONE:
        return outcome(200, {"status": "duplicate", "id": event.id}, "duplicate")
    if claim.state is ClaimState.IN_PROGRESS:
        detail = "another delivery of this event is being stored; retry later"
        return outcome(409, {"error": "in_progress", "detail": detail}, "in_progress")

    try:
        message = build_message(event, raw, runtime.settings.nats_subject_prefix)
        if message.translation_error:
            metrics.translation_failures.labels(event.type).inc()
        started = time.perf_counter()
        stored = await runtime.publisher.publish(message.subject, message.body, message.headers)
    except MessageTooLarge as exc:
        # No retry can fix it until max_payload is raised (docs/configuration.md).
        await _release(runtime, event.id, claim.token)
        detail = f"the CloudEvent is {exc.size} bytes; NATS max_payload is {exc.limit}"
        return _rejected("event_too_large", detail, 413, event_type=event.type, event_id=event.id)
    except Exception as exc:  # whatever happened, the event is not known to be stored
        reason = exc.failure.value if isinstance(exc, PublishError) else "internal_error"
        if not isinstance(exc, PublishError):
            log.exception("unexpected publish error event_id=%s", event.id)
        metrics.publish_failures.labels(reason).inc()
        await _release(runtime, event.id, claim.token)
        return outcome(503, {"error": reason}, "failed", reason)
    metrics.publish_seconds.observe(time.perf_counter() - started)
    metrics.first_ack()
    try:
        await runtime.store.mark_done(event.id)
    except IdempotencyError:
        # Stored already: answer 200. A redelivery is caught by JetStream's window.
        metrics.idempotency_errors.labels(runtime.store.backend, "mark_done").inc()
    if stored.duplicate:
        return outcome(200, {"status": "duplicate", "id": event.id}, "duplicate")
    body = {"status": "published", "id": event.id, "stream": stored.stream, "seq": stored.seq}
    return outcome(200, body, "published")


async def _release(runtime: Runtime, event_id: str, token: str) -> None:
    try:
        await runtime.store.release(event_id, token)
    except IdempotencyError:
        # The lease expires by itself; Stripe's retry waits at most that long.
        runtime.metrics.idempotency_errors.labels(runtime.store.backend, "release").inc()


_ALLOW_POST = {"Allow": "POST"}


def _method_not_allowed(allow: str) -> Response:
    return JSONResponse({"error": "method_not_allowed"}, 405, headers={"Allow": allow})


async def _read_limited(request: Request, limit: int) -> bytes | None:
    """The body, or None as soon as it is known to exceed ``limit`` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        return None
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)
