"""Recover events missed during an outage from Stripe's Events API (``stripe-bridge replay``).

Events are fetched with stripe-python (``GET /v1/events`` with the API's filters:
``created[gte]``, ``types[]``, ``delivery_success``, ``ending_before``, page by page; or
``GET /v1/events/{id}`` for one), sorted oldest first, and stored through
``ingest.ingest``: the same claim/publish/mark-done path as a webhook, minus the signature
check (the API call itself is authenticated). Events whose type no function serves are
stored too, as the catch-all function would.

Before publishing, the stream is scanned for the ``Nats-Msg-Id`` of everything stored
since the oldest fetched event was created: an event is stored after it is created, so
that scan holds every fetched event that is already there, however long ago it arrived.
That keeps a replay free of copies even beyond JetStream's duplicate window and the
idempotency TTL.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from ..envelope import StripeEvent
from ..errors import StripeBridgeError
from ..exitcodes import ExitCode
from ..ingest import Ingested, IngestStatus, ingest
from ..runtime import Runtime

#: Page size of the Events API (its maximum).
PAGE_SIZE = 100


class ReplayError(StripeBridgeError):
    """Replay cannot start: Stripe or NATS refused or is unreachable (one line, no secrets)."""

    exit_code = ExitCode.UNAVAILABLE


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


@dataclass(frozen=True)
class EventQuery:
    """Which events to list, in the Events API's own filters (docs.stripe.com/api/events/list).

    ``after`` is an event id: only events newer than it (``ending_before``), paged towards
    the newest. Without it, pages follow ``starting_after`` from the newest back.
    """

    since: datetime | None = None
    types: tuple[str, ...] = ()
    undelivered: bool = False
    after: str | None = None

    def params(self) -> dict[str, Any]:
        """The list request's parameters (stripe-python encodes ``types`` as ``types[N]``)."""
        params: dict[str, Any] = {"limit": PAGE_SIZE}
        if self.since is not None:
            params["created"] = {"gte": int(self.since.timestamp())}
        if self.types:
            params["types"] = list(self.types)
        if self.undelivered:
            # Events whose last delivery to an endpoint failed (Stripe's recovery guidance).
            params["delivery_success"] = False
        if self.after:
            params["ending_before"] = self.after
        return params


class EventNotFound(ReplayError):
    """Stripe has no event of that id (or it is older than the Events API keeps, 30 days)."""

    exit_code = ExitCode.NOT_FOUND


@contextmanager
def _stripe_errors(api_base: str) -> Iterator[None]:
    import stripe

    try:
        yield
    except stripe.AuthenticationError:
        raise ReplayError(f"Stripe at {api_base} rejected the API key") from None
    except stripe.APIConnectionError:
        raise ReplayError(f"cannot reach Stripe at {api_base}") from None
    except stripe.StripeError as exc:
        status = exc.http_status or "-"
        detail = exc.user_message or type(exc).__name__
        if status == 404:
            raise EventNotFound(f"Stripe at {api_base} answered HTTP 404: {detail}") from None
        raise ReplayError(f"Stripe at {api_base} answered HTTP {status}: {detail}") from None


def _client(api_key: str, api_base: str) -> Any:
    import stripe

    return stripe.StripeClient(api_key, base_addresses={"api": api_base}, max_network_retries=2)


def _raw(obj: Any, api_base: str) -> Any:
    # The raw JSON, not the StripeObject: its dicts turn decimal strings into Decimal, and
    # the stream keeps the event exactly as Stripe sent it.
    response = obj.last_response
    if response is None:  # stripe-python sets it on every fetched object
        raise ReplayError(f"Stripe at {api_base} sent no response body")
    return json.loads(response.body)


def fetch_events(api_key: str, api_base: str, query: EventQuery) -> list[dict[str, Any]]:
    """Every event ``query`` matches, oldest first, as plain JSON dicts."""
    client = _client(api_key, api_base)
    events: list[dict[str, Any]] = []
    with _stripe_errors(api_base):
        page = client.v1.events.list(params=query.params())
        while True:
            events += _raw(page, api_base)["data"]
            if not page.has_more:
                break
            page = page.previous_page() if query.after else page.next_page()
    # The API lists newest first; consumers expect the order things happened in.
    return sorted(events, key=lambda event: (event.get("created", 0), event.get("id", "")))


def fetch_event(api_key: str, api_base: str, event_id: str) -> dict[str, Any]:
    """One event by id (``GET /v1/events/{id}``); EventNotFound if Stripe has none."""
    with _stripe_errors(api_base):
        event: dict[str, Any] = _raw(
            _client(api_key, api_base).v1.events.retrieve(event_id), api_base
        )
    return event


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
