"""Store one trusted Stripe event exactly once: claim → publish → PubAck → mark done.

The webhook path calls ``ingest`` after verifying the signature; replay and import call it
directly for events fetched from Stripe's API or an export. It answers in domain terms
(``Ingested``); what that means in HTTP is ``webhook.py``'s business.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from .envelope import StripeEvent
from .idempotency import ClaimState, IdempotencyError
from .jetstream import MessageTooLarge, PublishError
from .message import build_message
from .reasons import Reason

if TYPE_CHECKING:
    from .runtime import Runtime

log = logging.getLogger(__name__)


class IngestStatus(StrEnum):
    """How storing one event ended (also the ``outcome`` metric label)."""

    #: Stored now; ``stream`` and ``seq`` say where.
    PUBLISHED = "published"
    #: Stored before (the idempotency store or JetStream's duplicate window knew it).
    DUPLICATE = "duplicate"
    #: Another delivery of the same event holds the claim; retry later.
    IN_PROGRESS = "in_progress"
    #: Not known to be stored, claim released; ``reason`` says why. Retry later.
    FAILED = "failed"
    #: Can never be stored as it is (``Reason.EVENT_TOO_LARGE``), claim released.
    REJECTED = "rejected"


@dataclass(frozen=True)
class Ingested:
    """The result of ``ingest`` for one event."""

    status: IngestStatus
    event_id: str
    event_type: str
    #: Why it FAILED or was REJECTED: idempotency, a PublishError's reason, internal_error,
    #: event_too_large.
    reason: Reason | None = None
    stream: str | None = None
    seq: int | None = None


async def ingest(runtime: Runtime, event: StripeEvent, raw: dict[str, Any] | bytes) -> Ingested:
    """Store one already-trusted event exactly once: claim, publish, await PubAck, mark done.

    ``raw`` is the whole event for the message's ``data.stripe``: a dict, or a webhook's
    body as signed (strict JSON, see ``message.build_message``).
    """
    metrics = runtime.metrics

    def outcome(status: IngestStatus, reason: Reason | None = None) -> Ingested:
        return Ingested(status, event.id, event.type, reason)

    try:
        claim = await runtime.store.claim(event.id)
    except IdempotencyError:
        metrics.idempotency_errors.labels(runtime.store.backend, "claim").inc()
        return outcome(IngestStatus.FAILED, Reason.IDEMPOTENCY_UNAVAILABLE)
    if claim.state is ClaimState.DONE:
        return outcome(IngestStatus.DUPLICATE)
    if claim.state is ClaimState.IN_PROGRESS:
        return outcome(IngestStatus.IN_PROGRESS)

    try:
        message = build_message(event, raw, runtime.settings.nats_subject_prefix)
        if message.translation_error:
            metrics.translation_failures.labels(event.type).inc()
        started = time.perf_counter()
        stored = await runtime.publisher.publish(message.subject, message.body, message.headers)
    except MessageTooLarge:
        # No retry can fix it until NATS max_payload is raised (docs/configuration.md).
        await _release(runtime, event.id, claim.token)
        return outcome(IngestStatus.REJECTED, Reason.EVENT_TOO_LARGE)
    except Exception as exc:  # whatever happened, the event is not known to be stored
        if isinstance(exc, PublishError):
            reason = exc.reason
        else:
            reason = Reason.INTERNAL_ERROR
            log.exception("unexpected publish error event_id=%s", event.id)
        metrics.publish_failures.labels(reason.value).inc()
        await _release(runtime, event.id, claim.token)
        return outcome(IngestStatus.FAILED, reason)
    metrics.publish_seconds.observe(time.perf_counter() - started)
    metrics.first_ack()
    try:
        await runtime.store.mark_done(event.id)
    except IdempotencyError:
        # Stored already: answer 200. A redelivery is caught by JetStream's window.
        metrics.idempotency_errors.labels(runtime.store.backend, "mark_done").inc()
    if stored.duplicate:
        return outcome(IngestStatus.DUPLICATE)
    return Ingested(
        IngestStatus.PUBLISHED, event.id, event.type, stream=stored.stream, seq=stored.seq
    )


async def _release(runtime: Runtime, event_id: str, token: str) -> None:
    try:
        await runtime.store.release(event_id, token)
    except IdempotencyError:
        # The lease expires by itself; Stripe's retry waits at most that long.
        runtime.metrics.idempotency_errors.labels(runtime.store.backend, "release").inc()
