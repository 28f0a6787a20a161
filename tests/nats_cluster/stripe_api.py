"""A local stand-in for Stripe's ``GET /v1/events`` (list events), serving real payloads.

It follows the documented contract: Bearer auth (401 with a Stripe error body otherwise),
``created[gte]`` filtering, newest first, ``limit`` and ``starting_after`` cursors, and the
``{"object": "list", "data": [...], "has_more": ..., "url": "/v1/events"}`` envelope. Pages
are capped at ``page_cap`` (the API may return fewer than ``limit``) so paging is exercised.
"""

from __future__ import annotations

from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, urlparse

from stripe_bridge_testing.standin import HttpStandIn, StandInHandler


class StripeEventsAPI(HttpStandIn):
    """Serves ``events`` for ``api_key`` on a loopback port until stopped."""

    def __init__(self, events: list[dict[str, Any]], api_key: str, page_cap: int = 4) -> None:
        super().__init__()
        self.events = sorted(events, key=lambda e: (e["created"], e["id"]), reverse=True)
        self.api_key = api_key
        self.page_cap = page_cap
        self.requests: list[dict[str, list[str]]] = []

    def page(self, query: dict[str, list[str]]) -> dict[str, Any]:
        """The list object answering ``query``."""
        gte = int(query.get("created[gte]", ["0"])[0])
        limit = min(int(query.get("limit", ["10"])[0]), self.page_cap)
        matching = [e for e in self.events if e["created"] >= gte]
        if "starting_after" in query:
            ids = [e["id"] for e in matching]
            matching = matching[ids.index(query["starting_after"][0]) + 1 :]
        data = matching[:limit]
        return {
            "object": "list",
            "data": data,
            "has_more": len(matching) > limit,
            "url": "/v1/events",
        }

    def handler(self) -> type[BaseHTTPRequestHandler]:
        """``GET /v1/events`` only."""
        api = self

        class Handler(StandInHandler):
            def do_GET(self) -> None:
                url = urlparse(self.path)
                if self.headers.get("Authorization") != f"Bearer {api.api_key}":
                    error = {"type": "invalid_request_error", "message": "Invalid API Key"}
                    self._send(401, {"error": error})
                    return
                if url.path != "/v1/events":
                    self._send(404, {"error": {"type": "invalid_request_error"}})
                    return
                query = parse_qs(url.query)
                api.requests.append(query)
                self._send(200, api.page(query))

            def _send(self, status: int, body: dict[str, Any]) -> None:
                self.send(status, body, headers={"Request-Id": "req_local"})

        return Handler
