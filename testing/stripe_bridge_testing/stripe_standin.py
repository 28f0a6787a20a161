"""A local stand-in of the Stripe API endpoints stripe-bridge calls, refusing what Stripe refuses.

Every test that talks to Stripe talks to this one. It serves, for one secret key:

- ``GET /v1/prices`` (checkout's lookup-key resolution),
- ``POST /v1/checkout/sessions`` and ``POST /v1/billing_portal/sessions``,
- ``GET /v1/events`` and ``GET /v1/events/{id}`` (``stripe-bridge replay``), with real
  event payloads.

Each request's parameters are validated against stripe-python's generated request type of
that endpoint (stripe 16.1.0, API version 2026-10-28.endive: ``stripe.params.PriceListParams``,
``stripe.params.checkout.SessionCreateParams``,
``stripe.params.billing_portal.SessionCreateParams``, ``stripe.params.EventListParams``,
``stripe.params.EventRetrieveParams``; see stripe_params.py), and by the rules the API
reference states in prose, which no type can carry: a portal session needs ``customer`` or
``customer_account`` (docs.stripe.com/api/customer_portal/sessions/create); ``type`` and
``types`` of the Events list exclude each other, ``limit`` is 1 to 100, and a cursor names
an event that exists (docs.stripe.com/api/events/list, docs.stripe.com/api/pagination).

Answers follow docs.stripe.com/api/errors: 401 for a missing or wrong Bearer key, 400
``invalid_request_error`` with ``param`` and ``code`` for a refused parameter, 404
``resource_missing`` for an unknown URL or event id, ``{"object": "list", ...}`` lists
newest first, paged at ``page_cap`` (the API may return fewer than ``limit``).

``complete_checkout(session_id)`` is the customer paying a created session: the events
Stripe then sends (stripe_webhooks.py) are listed by ``/v1/events`` and, with
``webhook_url`` and ``webhook_secret``, delivered signed to that endpoint.
"""

from __future__ import annotations

import fnmatch
import secrets
from collections.abc import Iterable
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from stripe.params import EventListParams, EventRetrieveParams, PriceListParams
from stripe.params.billing_portal import SessionCreateParams as PortalSessionCreateParams
from stripe.params.checkout import SessionCreateParams as CheckoutSessionCreateParams

from .standin import HttpStandIn, StandInHandler
from .stripe_params import Form, Refusal, check, decode_form
from .stripe_webhooks import Delivery, completion_events, deliver

#: Prices by lookup key, as the checkout tests' tier config names them.
PRICES = {"pro_monthly": "price_pro_m", "teams_monthly": "price_teams_m"}
#: Customers Stripe does not have (any other ``cus_`` id exists).
MISSING_CUSTOMERS = frozenset({"cus_missing"})

#: The request type of each endpoint; ``/v1/events/{id}`` is matched by prefix.
ENDPOINTS: dict[tuple[str, str], type] = {
    ("GET", "/v1/prices"): PriceListParams,
    ("POST", "/v1/checkout/sessions"): CheckoutSessionCreateParams,
    ("POST", "/v1/billing_portal/sessions"): PortalSessionCreateParams,
    ("GET", "/v1/events"): EventListParams,
    ("GET", "/v1/events/"): EventRetrieveParams,
}


class StripeStandIn(HttpStandIn):
    """Stripe's API for ``api_key`` on a loopback port; ``events`` are what it lists.

    ``undelivered`` holds the event ids whose delivery failed (``delivery_success=false``);
    ``fail_with`` scripts a status every request answers (Stripe down). ``calls`` records
    each request as (method, path, its form as sent: ``{"line_items[0][price]": ...}``);
    ``sessions`` each created Checkout Session by id (what paying it needs).
    """

    def __init__(
        self,
        api_key: str = "sk_test_standin",
        events: Iterable[dict[str, Any]] = (),
        page_cap: int = 4,
        undelivered: frozenset[str] = frozenset(),
        webhook_url: str | None = None,
        webhook_secret: str | None = None,
    ) -> None:
        super().__init__()
        self.api_key = api_key
        self.events = _newest_first(events)
        self.page_cap = page_cap
        self.undelivered = undelivered
        self.fail_with: int | None = None
        self.calls: list[tuple[str, str, dict[str, str]]] = []
        self.sessions: dict[str, dict[str, Any]] = {}
        self.webhook_url = webhook_url
        self.webhook_secret = webhook_secret

    def answer(self, method: str, path: str, pairs: list[tuple[str, str]]) -> tuple[int, Any]:
        """Status and JSON body Stripe would answer; refusals as Stripe's error object."""
        try:
            return 200, self._answer(method, path, pairs)
        except Refusal as refused:
            return refused.status, refused.body()

    def _answer(self, method: str, path: str, pairs: list[tuple[str, str]]) -> Any:
        if self.fail_with is not None:
            raise Refusal(self.fail_with, "scripted failure", type="api_error")
        prefix = "/v1/events/" if path.startswith("/v1/events/") else path
        params_type = ENDPOINTS.get((method, prefix))
        if params_type is None:
            raise Refusal(404, f"Unrecognized request URL ({method}: {path})")
        form = decode_form(pairs)
        check(form, params_type)
        if prefix == "/v1/prices":
            keys = form.get("lookup_keys", [])
            data = [{"id": PRICES[k], "object": "price", "lookup_key": k} for k in PRICES]
            return _list([price for price in data if price["lookup_key"] in keys], path)
        if prefix == "/v1/events":
            return self._events_page(form)
        if prefix == "/v1/events/":
            return self._event(path.removeprefix(prefix))
        return self._session(path, form)

    def _session(self, path: str, form: Form) -> dict[str, Any]:
        customer = form.get("customer")
        if customer in MISSING_CUSTOMERS:
            raise Refusal(400, f"No such customer: '{customer}'", "customer", "resource_missing")
        if path == "/v1/checkout/sessions":
            sid = "cs_test_" + secrets.token_hex(8)
            url = f"https://checkout.stripe.com/c/pay/{sid}"
            self.sessions[sid] = {
                "id": sid,
                "customer": customer,
                "line_items": form.get("line_items", []),
                "metadata": form.get("metadata", {}),
                "subscription_metadata": form.get("subscription_data", {}).get("metadata", {}),
            }
            return {"id": sid, "object": "checkout.session", "url": url, "mode": form.get("mode")}
        if customer is None and "customer_account" not in form:
            message = "You must provide one of customer or customer_account."
            raise Refusal(400, message, "customer", "parameter_missing")
        sid = "bps_" + secrets.token_hex(8)
        url = f"https://billing.stripe.com/p/session/{sid}"
        return {"id": sid, "object": "billing_portal.session", "url": url}

    def complete_checkout(self, session_id: str) -> list[Delivery]:
        """The customer pays session ``session_id`` (KeyError if never created): Stripe's
        events are listed from now on and delivered, in order, to the webhook endpoint."""
        session = self.sessions[session_id]
        price_id = session["line_items"][0]["price"]
        lookup_key = next(key for key, pid in PRICES.items() if pid == price_id)
        events = completion_events(session, {"id": price_id, "lookup_key": lookup_key})
        self.events = _newest_first([*self.events, *events])
        if self.webhook_url is None or self.webhook_secret is None:
            return []
        return [deliver(self.webhook_url, self.webhook_secret, event) for event in events]

    def _event(self, event_id: str) -> dict[str, Any]:
        for event in self.events:
            if event["id"] == event_id:
                return event
        raise Refusal(404, f"No such event: '{event_id}'", "id", "resource_missing")

    def _matching(self, form: Form) -> list[dict[str, Any]]:
        """The events the list filters of ``form`` select, newest first."""
        if "type" in form and "types" in form:
            message = "You may pass either type or types, but not both."
            raise Refusal(400, message, "types", "parameters_exclusive")
        created = form.get("created", {})
        bounds = {"eq": int(created)} if isinstance(created, str) else created
        tests = {
            "eq": lambda c, v: c == v,
            "gt": lambda c, v: c > v,
            "gte": lambda c, v: c >= v,
            "lt": lambda c, v: c < v,
            "lte": lambda c, v: c <= v,
        }
        patterns = form.get("types") or [form.get("type", "*")]
        delivered = form.get("delivery_success")
        return [
            e
            for e in self.events
            if all(tests[op](e["created"], int(v)) for op, v in bounds.items())
            and any(fnmatch.fnmatchcase(e["type"], p) for p in patterns)
            and (delivered is None or (e["id"] not in self.undelivered) == (delivered == "true"))
        ]

    def _events_page(self, form: Form) -> dict[str, Any]:
        limit = int(form.get("limit", "10"))
        if not 1 <= limit <= 100:
            message = "Invalid limit: must be between 1 and 100"
            raise Refusal(400, message, "limit", "parameter_invalid_integer")
        matching = self._matching(form)
        ids = [e["id"] for e in self.events]
        for cursor in ("starting_after", "ending_before"):
            if cursor in form and form[cursor] not in ids:
                message = f"No such event: '{form[cursor]}'"
                raise Refusal(400, message, cursor, "resource_missing")
        limit = min(limit, self.page_cap)
        if "starting_after" in form:
            position = ids.index(form["starting_after"])
            older = [e for e in matching if ids.index(e["id"]) > position]
            data, has_more = older[:limit], len(older) > limit
        elif "ending_before" in form:
            position = ids.index(form["ending_before"])
            newer = [e for e in matching if ids.index(e["id"]) < position]
            data, has_more = newer[-limit:], len(newer) > limit
        else:
            data, has_more = matching[:limit], len(matching) > limit
        return {**_list(data, "/v1/events"), "has_more": has_more}

    def handler(self) -> type[BaseHTTPRequestHandler]:
        """Stripe's form-encoded API: Bearer key, JSON objects and errors back."""
        standin = self

        class Handler(StandInHandler):
            def _serve(self, method: str) -> None:
                parts = urlsplit(self.path)
                raw = self.read_body().decode() if method == "POST" else parts.query
                pairs = parse_qsl(raw, keep_blank_values=True)
                standin.calls.append((method, parts.path, dict(pairs)))
                if self.headers.get("Authorization") != f"Bearer {standin.api_key}":
                    refused = Refusal(401, "Invalid API Key provided")
                    status, body = refused.status, refused.body()
                else:
                    status, body = standin.answer(method, parts.path, pairs)
                self.send(status, body, headers={"Request-Id": "req_standin"})

            def do_GET(self) -> None:
                self._serve("GET")

            def do_POST(self) -> None:
                self._serve("POST")

        return Handler


def _list(data: list[dict[str, Any]], url: str) -> dict[str, Any]:
    return {"object": "list", "data": data, "has_more": False, "url": url}


def _newest_first(events: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(events, key=lambda e: (e["created"], e["id"]), reverse=True)
