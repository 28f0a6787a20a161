"""Recover events missed during an outage from Stripe's Events API (``stripe-bridge replay``).

Events are fetched with stripe-python (``GET /v1/events?created[gte]=``, page by page),
sorted oldest first, and stored through ``ingest.ingest``: the same claim/publish/mark-done
path as a webhook, minus the signature check (the API call itself is authenticated).
Events whose type no function serves are stored too, as the catch-all function would.

Before publishing, the stream is scanned for the ``Nats-Msg-Id`` of everything stored
since the same moment: an event is stored after it is created, so that scan holds every
event of the window that is already there, however long ago it arrived. That keeps a
replay free of copies even beyond JetStream's duplicate window and the idempotency TTL.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from .envelope import StripeEvent
from .ingest import Ingested, IngestStatus, Runtime, ingest

#: Page size of the Events API (its maximum).
PAGE_SIZE = 100


class ReplayError(Exception):
    """Replay cannot start: Stripe or NATS refused or is unreachable (one line, no secrets)."""


@dataclass
class ReplayCounts:
    """What a replay did with each fetched event."""

    published: int = 0
    duplicate: int = 0
    failed: int = 0

    def add(self, status: IngestStatus) -> None:
        """Count one ``ingest`` result (published, duplicate, anything else failed)."""
        if status is IngestStatus.PUBLISHED:
            self.published += 1
        elif status is IngestStatus.DUPLICATE:
            self.duplicate += 1
        else:
            self.failed += 1


def fetch_events(api_key: str, api_base: str, since: datetime) -> list[dict[str, Any]]:
    """Every event created at or after ``since``, oldest first, as plain JSON dicts."""
    import stripe

    client = stripe.StripeClient(api_key, base_addresses={"api": api_base}, max_network_retries=2)
    try:
        page = client.v1.events.list(
            params={"created": {"gte": int(since.timestamp())}, "limit": PAGE_SIZE}
        )
        # Each page's raw JSON, not the StripeObjects: their dicts turn decimal strings
        # into Decimal, and the stream keeps the event exactly as Stripe sent it.
        events: list[dict[str, Any]] = []
        while True:
            response = page.last_response
            if response is None:  # stripe-python sets it on every fetched page
                raise ReplayError(f"Stripe at {api_base} sent no response body")
            events += json.loads(response.body)["data"]
            if not page.has_more:
                break
            page = page.next_page()
    except stripe.AuthenticationError:
        raise ReplayError(f"Stripe at {api_base} rejected the API key") from None
    except stripe.APIConnectionError:
        raise ReplayError(f"cannot reach Stripe at {api_base}") from None
    except stripe.StripeError as exc:
        status = exc.http_status or "-"
        detail = exc.user_message or type(exc).__name__
        raise ReplayError(f"Stripe at {api_base} answered HTTP {status}: {detail}") from None
    # The API lists newest first; consumers expect the order things happened in.
    return sorted(events, key=lambda event: (event.get("created", 0), event.get("id", "")))


async def replay_events(
    runtime: Runtime,
    events: list[dict[str, Any]],
    already_stored: set[str],
    on_event: Callable[[Ingested | None], None] = lambda _result: None,
) -> ReplayCounts:
    """Ingest each event not in ``already_stored``; count what happened to every event."""
    counts = ReplayCounts()
    for raw in events:
        if raw.get("id") in already_stored:
            counts.duplicate += 1
            on_event(None)
            continue
        try:
            event = StripeEvent.model_validate(raw)
        except ValidationError:
            counts.failed += 1
            on_event(None)
            continue
        result = await ingest(runtime, event, raw)
        counts.add(result.status)
        on_event(result)
    return counts
