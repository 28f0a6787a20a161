"""``forward-openmeter``: a durable JetStream pull consumer that feeds OpenMeter's ingest API.

Contract used (OpenMeter API ``ingestEvents``, openmeterio/openmeter 7e57a394
``api/openapi.cloud.yaml`` line 4333): ``POST {OPENMETER_URL}/api/v1/events``,
``Content-Type: application/cloudevents-batch+json``, ``Authorization: Bearer <key>``,
body a JSON array of CloudEvents; 204 when accepted, else 400, 401, 403, 412, 500 or 503
with RFC 7807 problem JSON. 413 and 429 are not OpenMeter's but a proxy's in front of it
(a body limit, a rate limit), so they are handled too.

Delivery is at least once: a message is acked only after OpenMeter answered 2xx for the
request that carried it, so a crash between the 2xx and the ack re-sends that batch, and
so does a 5xx: OpenMeter ingests a batch event by event and keeps those before a failure.
The re-sent events keep their (id, source); OpenMeter counts them once only with its
dedupe enabled (docs/billing.md, "OpenMeter settings this relies on").
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import httpx
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from pydantic import Field, SecretStr

from ..config import EnvModel
from ..errors import StripeBridgeError
from ..exitcodes import ExitCode
from ..streams import USAGE_DLQ_SUBJECT_PREFIX as DEAD_LETTER_SUBJECT_PREFIX
from ..streams import USAGE_STREAM, USAGE_SUBJECT_PREFIX
from .breaker import BreakerState, CircuitBreaker
from .usage import DEAD_LETTER_REASON_HEADER

log = logging.getLogger(__name__)

INGEST_PATH = "/api/v1/events"
BATCH_CONTENT_TYPE = "application/cloudevents-batch+json"


class ForwarderSettings(EnvModel):
    """Settings of ``forward-openmeter``, from ``OPENMETER_*`` environment variables."""

    env_prefix = "OPENMETER_"

    url: str = Field(pattern=r"^https?://", description="OpenMeter base URL.")
    api_key: SecretStr = Field(description="OpenMeter API token (sent as Bearer).")
    batch_size: int = Field(default=100, ge=1, le=1000)
    fetch_wait: float = Field(default=1.0, gt=0, le=30, description="Max wait for a batch, s.")
    request_timeout: float = Field(default=10.0, gt=0, le=120)
    max_requests_per_second: float = Field(default=20.0, gt=0)
    backoff_base: float = Field(default=0.5, gt=0, le=60)
    backoff_max: float = Field(default=30.0, gt=0, le=600)
    max_retry_after: float = Field(default=300.0, gt=0, le=3600)
    breaker_failures: int = Field(default=5, ge=1, le=100)
    breaker_reset: float = Field(default=30.0, gt=0, le=3600)
    ack_wait: float = Field(default=30.0, ge=1, le=3600)
    durable: str = Field(default="openmeter", pattern=r"^[A-Za-z0-9_-]+$")
    stream: str = Field(default=USAGE_STREAM, pattern=r"^[A-Za-z0-9_-]+$")


class Verdict(StrEnum):
    """What an ingest request's answer means for the events it carried."""

    ACCEPTED = "accepted"
    INVALID = "invalid"
    #: 412: a precondition of OpenMeter's own failed; the same request fails again.
    PRECONDITION_FAILED = "precondition_failed"
    RATE_LIMITED = "rate_limited"
    UNAVAILABLE = "unavailable"
    UNAUTHORIZED = "unauthorized"


@dataclass(frozen=True)
class Answer:
    """OpenMeter's answer to one request."""

    verdict: Verdict
    status: int | None
    detail: str = ""
    retry_after: float | None = None


class OpenMeterAuthError(StripeBridgeError):
    """OpenMeter refused the API key (401/403); retrying cannot help."""

    exit_code = ExitCode.UNAVAILABLE


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or HTTP-date)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    current = datetime.now(UTC).timestamp() if now is None else now
    return max(0.0, when.timestamp() - current)


def _problem_detail(response: httpx.Response) -> str:
    try:
        problem = response.json()
    except ValueError:
        return response.text[:200]
    if isinstance(problem, dict):
        return str(problem.get("detail") or problem.get("title") or "")[:300]
    return ""


def classify(response: httpx.Response) -> Answer:
    """Map an HTTP answer of the ingest endpoint onto a ``Verdict``."""
    status = response.status_code
    retry_after = parse_retry_after(response.headers.get("retry-after"))
    if 200 <= status < 300:
        return Answer(Verdict.ACCEPTED, status)
    # 400 is OpenMeter's "invalid event"; a proxy's 413 and an RFC 9110 422 also refuse
    # the content itself: splitting the batch finds the events at fault.
    if status in (400, 413, 422):
        return Answer(Verdict.INVALID, status, _problem_detail(response))
    if status == 412:
        return Answer(Verdict.PRECONDITION_FAILED, status, _problem_detail(response))
    if status == 429:
        return Answer(Verdict.RATE_LIMITED, status, retry_after=retry_after)
    if status in (401, 403):
        return Answer(Verdict.UNAUTHORIZED, status, _problem_detail(response))
    return Answer(Verdict.UNAVAILABLE, status, _problem_detail(response), retry_after)


class OpenMeterClient:
    """Sends batches of CloudEvents (raw JSON bodies) to the ingest endpoint."""

    def __init__(self, settings: ForwarderSettings, transport: Any = None) -> None:
        self._client = httpx.AsyncClient(
            base_url=settings.url.rstrip("/"),
            headers={
                "Authorization": f"Bearer {settings.api_key.get_secret_value()}",
                "Content-Type": BATCH_CONTENT_TYPE,
            },
            timeout=settings.request_timeout,
            transport=transport,
        )

    async def send(self, events: Sequence[bytes]) -> Answer:
        """POST ``events`` (each one structured CloudEvent JSON) as one batch."""
        body = b"[" + b",".join(events) + b"]"
        try:
            response = await self._client.post(INGEST_PATH, content=body)
        except httpx.HTTPError as exc:
            return Answer(Verdict.UNAVAILABLE, None, type(exc).__name__)
        return classify(response)

    async def close(self) -> None:
        """Close the connection pool."""
        await self._client.aclose()


class ForwarderMetrics:
    """The forwarder's metrics, in their own registry (served on ``--metrics-port``)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.sent = Counter(
            "stripe_bridge_openmeter_events_sent",
            "Usage events OpenMeter accepted (2xx) and that were then acked.",
            registry=r,
        )
        self.retried = Counter(
            "stripe_bridge_openmeter_events_retried",
            "Usage events sent again after a failed attempt, by reason.",
            ["reason"],
            registry=r,
        )
        self.dead_lettered = Counter(
            "stripe_bridge_openmeter_events_dead_lettered",
            "Usage events OpenMeter refused (invalid, or 412), moved to the dead-letter stream.",
            registry=r,
        )
        self.requests = Counter(
            "stripe_bridge_openmeter_requests",
            "Ingest requests, by verdict.",
            ["verdict"],
            registry=r,
        )
        self.request_seconds = Histogram(
            "stripe_bridge_openmeter_request_duration_seconds",
            "Time OpenMeter took to answer an ingest request.",
            registry=r,
        )
        self.breaker_state = Gauge(
            "stripe_bridge_openmeter_breaker_state",
            "Circuit breaker towards OpenMeter: 0 closed, 1 half-open, 2 open.",
            registry=r,
        )
        self.breaker_transitions = Counter(
            "stripe_bridge_openmeter_breaker_transitions",
            "Circuit breaker state changes, by the state entered.",
            ["state"],
            registry=r,
        )
        self.lag = Gauge(
            "stripe_bridge_openmeter_consumer_lag",
            "Usage events in the stream not yet delivered to the forwarder.",
            registry=r,
        )
        self.fetch_errors = Counter(
            "stripe_bridge_openmeter_fetch_errors",
            "Pulls from JetStream that failed (NATS unavailable); retried after a second.",
            registry=r,
        )
        self.ack_errors = Counter(
            "stripe_bridge_openmeter_ack_errors",
            "Accepted events whose ack did not reach NATS (they are redelivered and re-sent).",
            registry=r,
        )
        self.ack_pending = Gauge(
            "stripe_bridge_openmeter_ack_pending",
            "Usage events delivered to the forwarder and not yet acked.",
            registry=r,
        )

    def breaker_changed(self, state: BreakerState) -> None:
        """Callback of the breaker."""
        self.breaker_state.set(int(state))
        self.breaker_transitions.labels(state.name.lower()).inc()


def backoff_delay(attempt: int, base: float, cap: float) -> float:
    """Exponential backoff with jitter: about ``base * 2**attempt``, at most ``cap``."""
    ceiling: float = min(cap, base * 2.0 ** min(attempt, 30))
    return ceiling / 2 + random.uniform(0, ceiling / 2)


class Forwarder:
    """Pull usage events from JetStream and deliver them to OpenMeter, at least once."""

    def __init__(
        self,
        nc: Any,
        settings: ForwarderSettings,
        metrics: ForwarderMetrics | None = None,
        client: OpenMeterClient | None = None,
    ) -> None:
        self.nc = nc
        self.js = nc.jetstream()
        self.settings = settings
        self.metrics = metrics or ForwarderMetrics()
        self.client = client or OpenMeterClient(settings)
        self.breaker = CircuitBreaker(
            settings.breaker_failures,
            settings.breaker_reset,
            on_change=self.metrics.breaker_changed,
        )
        self._next_request_at = 0.0
        self._lag_checked_at = 0.0
        self._inflight: list[Any] = []

    async def subscribe(self) -> Any:
        """Bind (creating if needed) the durable pull consumer on ``usage.>``."""
        from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

        config = ConsumerConfig(
            durable_name=self.settings.durable,
            ack_policy=AckPolicy.EXPLICIT,
            deliver_policy=DeliverPolicy.ALL,
            ack_wait=self.settings.ack_wait,
            # Never give up on an event: only OpenMeter's own "invalid" dead-letters one.
            max_deliver=-1,
            max_ack_pending=max(1000, self.settings.batch_size * 4),
        )
        return await self.js.pull_subscribe(
            f"{USAGE_SUBJECT_PREFIX}.>",
            durable=self.settings.durable,
            stream=self.settings.stream,
            config=config,
        )

    async def run(self, stop: asyncio.Event, on_bound: Callable[[], object] | None = None) -> None:
        """Forward until ``stop`` is set; raise ``OpenMeterAuthError`` on 401/403.

        ``on_bound`` runs once the durable consumer is bound (the command serves /metrics
        from there, so that a ready probe means "consuming").
        """
        from nats import errors as nats_errors

        sub = await self.subscribe()
        if on_bound is not None:
            on_bound()
        log.info("forwarding %s.> to %s", USAGE_SUBJECT_PREFIX, self.settings.url)
        try:
            while not stop.is_set():
                try:
                    msgs = await sub.fetch(
                        self.settings.batch_size, timeout=self.settings.fetch_wait
                    )
                except TimeoutError:  # nats-py raises asyncio's or its own subclass
                    msgs = []
                except nats_errors.Error as exc:
                    # NATS restarting or reconnecting: the consumer's state is on the server.
                    log.warning("fetch failed: %s", type(exc).__name__)
                    self.metrics.fetch_errors.inc()
                    await self._pause(1.0, stop)
                    continue
                if msgs:
                    await self.deliver(msgs, stop)
                await self._update_lag(sub, force=not msgs)
        finally:
            # A bound pull subscription makes a later drain() wait its whole timeout.
            await sub.unsubscribe()
            await self.client.close()

    async def _update_lag(self, sub: Any, force: bool) -> None:
        now = time.monotonic()
        if not force and now - self._lag_checked_at < 1.0:
            return
        self._lag_checked_at = now
        try:
            info = await sub.consumer_info()
        except Exception as exc:  # lag is informational; never stop forwarding for it
            log.warning("consumer info failed: %s", type(exc).__name__)
            return
        self.metrics.lag.set(info.num_pending)
        self.metrics.ack_pending.set(info.num_ack_pending)

    async def deliver(self, msgs: list[Any], stop: asyncio.Event) -> None:
        """Send one fetched batch; split it on 400 until the invalid events are isolated.

        A 412 dead-letters the whole batch: the spec's "conditions given in the request
        header fields evaluated to false" cannot be about our events (we send no
        conditional headers), so it is OpenMeter's state refusing this request; retrying
        would block the stream forever and splitting would only repeat the refusal.
        """
        self._inflight = msgs
        queue: list[list[Any]] = [msgs]
        while queue:
            batch = queue.pop(0)
            answer = await self._send_until_answered(batch, stop)
            if answer is None:
                return  # stopping: unacked messages are redelivered after ack_wait
            if answer.verdict is Verdict.ACCEPTED:
                self.metrics.sent.inc(len(batch))
                await self._ack(batch)
            elif answer.verdict is Verdict.PRECONDITION_FAILED:
                for msg in batch:
                    await self._dead_letter(msg, answer)
            elif len(batch) > 1:
                half = len(batch) // 2
                queue[:0] = [batch[:half], batch[half:]]
            else:
                await self._dead_letter(batch[0], answer)
        self._inflight = []

    async def _ack(self, batch: list[Any]) -> None:
        """Ack an accepted batch; if NATS is away, redelivery re-sends it (same ids)."""
        from nats import errors as nats_errors

        try:
            for msg in batch:
                await msg.ack()
            # The acks are fire-and-forget publishes; make sure the server has them.
            await self.nc.flush()
        except (nats_errors.Error, TimeoutError) as exc:
            log.warning(
                "ack failed, %d events will be sent again: %s", len(batch), type(exc).__name__
            )
            self.metrics.ack_errors.inc(len(batch))

    async def _send_until_answered(self, batch: list[Any], stop: asyncio.Event) -> Answer | None:
        attempt = 0
        while True:
            wait = self.breaker.wait_seconds()
            if wait > 0:
                if not await self._pause(wait, stop):
                    return None
                continue
            if not await self._pause(self._next_request_at - time.monotonic(), stop):
                return None
            self._next_request_at = time.monotonic() + 1.0 / self.settings.max_requests_per_second
            started = time.monotonic()
            answer = await self.client.send([msg.data for msg in batch])
            self.metrics.request_seconds.observe(time.monotonic() - started)
            self.metrics.requests.labels(answer.verdict.value).inc()
            if answer.verdict in (Verdict.ACCEPTED, Verdict.INVALID, Verdict.PRECONDITION_FAILED):
                # OpenMeter answered for itself: up, whatever it thought of the request.
                self.breaker.record_success()
                return answer
            if answer.verdict is Verdict.UNAUTHORIZED:
                log.error("openmeter refused the API key: status=%s", answer.status)
                raise OpenMeterAuthError(f"OpenMeter answered {answer.status}")
            if answer.verdict is Verdict.UNAVAILABLE:
                # A 429 proves the service is up: only real failures count for the breaker.
                self.breaker.record_failure()
            delay = backoff_delay(attempt, self.settings.backoff_base, self.settings.backoff_max)
            if answer.retry_after is not None:
                delay = min(answer.retry_after, self.settings.max_retry_after)
            log.warning(
                "openmeter %s status=%s events=%d retry_in=%.2fs breaker=%s",
                answer.verdict.value,
                answer.status,
                len(batch),
                delay,
                self.breaker.state.name.lower(),
            )
            self.metrics.retried.labels(answer.verdict.value).inc(len(batch))
            attempt += 1
            if not await self._pause(delay, stop):
                return None

    async def _pause(self, seconds: float, stop: asyncio.Event) -> bool:
        """Wait ``seconds`` (False if ``stop`` came first), keeping in-flight messages ours."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            try:
                await asyncio.wait_for(stop.wait(), timeout=min(left, self.settings.ack_wait / 3))
                return False
            except TimeoutError:
                pass
            # Long waits (Retry-After, open breaker) must not let ack_wait expire: that
            # would redeliver the same events to another forwarder while we still hold them.
            await self._keep_inflight()
        return not stop.is_set()

    async def _keep_inflight(self) -> None:
        """Tell NATS the in-flight messages are still being worked on.

        While NATS is away (a node restarting, the connection reconnecting) the progress
        acks cannot go out; the next round of the wait tries again. Should ack_wait lapse
        meanwhile, the events are redelivered and sent again: a repeat OpenMeter's dedupe
        drops, not a crash of the forwarder (which took every in-flight batch with it).
        """
        from nats import errors as nats_errors

        for msg in self._inflight:
            try:
                await msg.in_progress()
            except nats_errors.Error as exc:
                log.info("progress ack deferred while NATS is away: %s", type(exc).__name__)
                return

    async def _dead_letter(self, msg: Any, answer: Answer) -> None:
        """Keep an event OpenMeter refused in the dead-letter stream, then drop it here."""
        meter = msg.subject.split(".", 1)[1] if "." in msg.subject else "unknown"
        headers = dict(msg.headers or {})
        headers[DEAD_LETTER_REASON_HEADER] = f"{answer.status}: {answer.detail}"[:500]
        try:
            await self.js.publish(
                f"{DEAD_LETTER_SUBJECT_PREFIX}.{meter}", msg.data, headers=headers
            )
        except Exception as exc:
            # Not stored in the dead-letter stream: keep it in USAGE to try again later.
            log.error("dead-letter publish failed: %s", type(exc).__name__)
            self.metrics.retried.labels("dead_letter_failed").inc()
            await msg.nak(delay=self.settings.backoff_max)
            return
        await msg.term()
        self.metrics.dead_lettered.inc()
        log.warning(
            "dead-lettered usage event id=%s status=%s reason=%s",
            headers.get("Nats-Msg-Id", "?"),
            answer.status,
            answer.detail[:120],
        )
