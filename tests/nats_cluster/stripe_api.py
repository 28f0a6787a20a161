"""A local stand-in for Stripe's Events API (list and retrieve), serving real payloads.

It follows the documented contract (docs.stripe.com/api/events/list, /retrieve): Bearer
auth (401 with a Stripe error body otherwise); ``GET /v1/events/{id}`` (404
``resource_missing`` for an unknown id); ``GET /v1/events`` newest first with the filters
``created[gte]``, ``types[]`` (stripe-python sends ``types[0]``, ``types[1]``...),
``delivery_success`` (``false``: events whose last delivery to an endpoint failed), the
cursors ``starting_after`` (the page after, older) and ``ending_before`` (the page of
events just newer than the cursor, still newest first), ``limit``, ``has_more`` and the
``{"object": "list", "data": [...], "url": "/v1/events"}`` envelope. Pages are capped at
``page_cap`` (the API may return fewer than ``limit``) so paging is exercised.
"""

from __future__ import annotations

from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, urlparse

from stripe_bridge_testing.standin import HttpStandIn, StandInHandler


class StripeEventsAPI(HttpStandIn):
    """Serves ``events`` for ``api_key`` on a loopback port until stopped.

    ``undelivered`` holds the ids whose delivery failed (``delivery_success=false``).
    """

    def __init__(
        self,
        events: list[dict[str, Any]],
        api_key: str,
        page_cap: int = 4,
        undelivered: frozenset[str] = frozenset(),
    ) -> None:
        super().__init__()
        self.events = sorted(events, key=lambda e: (e["created"], e["id"]), reverse=True)
        self.api_key = api_key
        self.page_cap = page_cap
        self.undelivered = undelivered
        self.requests: list[dict[str, list[str]]] = []

    def matching(self, query: dict[str, list[str]]) -> list[dict[str, Any]]:
        """The events the filters of ``query`` select, newest first."""
        gte = int(query.get("created[gte]", ["0"])[0])
        types = [v for key, values in query.items() if key.startswith("types[") for v in values]
        delivered = query.get("delivery_success", [None])[0]
        return [
            e
            for e in self.events
            if e["created"] >= gte
            and (not types or e["type"] in types)
            and (delivered is None or (e["id"] not in self.undelivered) == (delivered == "true"))
        ]

    def page(self, query: dict[str, list[str]]) -> dict[str, Any]:
        """The list object answering ``query``."""
        limit = min(int(query.get("limit", ["10"])[0]), self.page_cap)
        matching = self.matching(query)
        ids = [e["id"] for e in matching]
        if "starting_after" in query:
            matching = matching[ids.index(query["starting_after"][0]) + 1 :]
            data, has_more = matching[:limit], len(matching) > limit
        elif "ending_before" in query:
            newer = matching[: ids.index(query["ending_before"][0])]
            data, has_more = newer[-limit:], len(newer) > limit
        else:
            data, has_more = matching[:limit], len(matching) > limit
        return {"object": "list", "data": data, "has_more": has_more, "url": "/v1/events"}

    def handler(self) -> type[BaseHTTPRequestHandler]:
        """``GET /v1/events`` and ``GET /v1/events/{id}`` only."""
        api = self

        class Handler(StandInHandler):
            def do_GET(self) -> None:
                url = urlparse(self.path)
                if self.headers.get("Authorization") != f"Bearer {api.api_key}":
                    error = {"type": "invalid_request_error", "message": "Invalid API Key"}
                    self._send(401, {"error": error})
                    return
                query = parse_qs(url.query)
                api.requests.append({"path": [url.path], **query})
                if url.path == "/v1/events":
                    self._send(200, api.page(query))
                    return
                event_id = url.path.removeprefix("/v1/events/")
                found = [e for e in api.events if e["id"] == event_id and "/" not in event_id]
                if url.path.startswith("/v1/events/") and found:
                    self._send(200, found[0])
                    return
                error = {
                    "type": "invalid_request_error",
                    "code": "resource_missing",
                    "message": f"No such event: '{event_id}'",
                }
                self._send(404, {"error": error})

            def _send(self, status: int, body: dict[str, Any]) -> None:
                self.send(status, body, headers={"Request-Id": "req_local"})

        return Handler
