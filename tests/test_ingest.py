"""``ingest``: one trusted event stored exactly once, answered in domain terms (no HTTP).

Replay and import call it directly; the webhook path maps its result to HTTP.
"""

from __future__ import annotations

from stripe_bridge.config import load_settings
from stripe_bridge.envelope import StripeEvent
from stripe_bridge.ingest import Ingested, IngestStatus, ingest
from stripe_bridge.ops.natsserver import NatsServer, free_port
from stripe_bridge.reasons import Reason
from stripe_bridge.runtime import Runtime
from stripe_bridge_testing.deliveries import fixture_event, stream_messages


async def test_published_then_duplicate_then_in_progress(stream: NatsServer) -> None:
    runtime = Runtime(load_settings(nats_url=stream.url), "stripe_event")
    raw = fixture_event("invoice_paid", fresh_id=True)
    event = StripeEvent.model_validate(raw)
    held = StripeEvent.model_validate(fixture_event("invoice_paid", fresh_id=True))
    try:
        first = await ingest(runtime, event, raw)
        again = await ingest(runtime, event, raw)
        await runtime.store.claim(held.id)  # another delivery of ``held`` is being stored
        busy = await ingest(runtime, held, raw)
    finally:
        await runtime.close()
    assert first == Ingested(
        IngestStatus.PUBLISHED, event.id, "invoice.paid", stream="STRIPE", seq=1
    )
    assert again == Ingested(IngestStatus.DUPLICATE, event.id, "invoice.paid")
    assert busy == Ingested(IngestStatus.IN_PROGRESS, held.id, "invoice.paid")
    stored = await stream_messages(stream.url)
    assert [m.headers["Nats-Msg-Id"] for m in stored] == [event.id]


async def test_failed_releases_the_claim() -> None:
    # Nothing listens on this port: the event is not stored, and a retry may claim it again.
    settings = load_settings(
        nats_url=f"nats://127.0.0.1:{free_port()}", nats_connect_timeout=0.2, publish_timeout=0.5
    )
    runtime = Runtime(settings, "stripe_event")
    raw = fixture_event("invoice_paid", fresh_id=True)
    event = StripeEvent.model_validate(raw)
    try:
        failed = await ingest(runtime, event, raw)
        retry = await runtime.store.claim(event.id)
    finally:
        await runtime.close()
    assert failed == Ingested(
        IngestStatus.FAILED, event.id, "invoice.paid", Reason.NATS_UNAVAILABLE
    )
    assert retry.state.value == "claimed"
