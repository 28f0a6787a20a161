"""A local stand-in of the three Stripe API endpoints the checkout and portal functions call.

It follows Stripe's documented contract: Bearer secret key, form-encoded bodies with
bracketed keys (``line_items[0][price]``), JSON objects back, and errors as
``{"error": {"type", "message", "param"}}`` with 400/401/500 statuses.
"""

from __future__ import annotations

import secrets
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from stripe_bridge_testing.standin import HttpStandIn, StandInHandler

PRICES = {"pro_monthly": "price_pro_m", "teams_monthly": "price_teams_m"}


class StripeStandIn(HttpStandIn):
    """Serves /v1/prices, /v1/checkout/sessions, /v1/billing_portal/sessions on loopback."""

    def __init__(self, api_key: str = "sk_test_standin") -> None:
        super().__init__()
        self.api_key = api_key
        self.calls: list[tuple[str, str, dict[str, str]]] = []
        self.fail_with: int | None = None

    def _answer(self, method: str, path: str, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
        if self.fail_with is not None:
            return self.fail_with, _error("api_error", "scripted failure")
        if method == "GET" and path == "/v1/prices":
            key = form.get("lookup_keys[0]", "")
            found = [key] if key in PRICES else []
            data = [{"id": PRICES[k], "object": "price", "lookup_key": k} for k in found]
            return 200, {"object": "list", "data": data, "has_more": False, "url": "/v1/prices"}
        if method != "POST":
            return 404, _error("invalid_request_error", f"Unrecognized request URL ({path})")
        if form.get("customer") == "cus_missing":
            return 400, _error(
                "invalid_request_error", "No such customer: 'cus_missing'", "customer"
            )
        if path == "/v1/checkout/sessions":
            sid = "cs_test_" + secrets.token_hex(8)
            url = f"https://checkout.stripe.com/c/pay/{sid}"
            return 200, {"id": sid, "object": "checkout.session", "url": url, **form}
        if path == "/v1/billing_portal/sessions":
            sid = "bps_" + secrets.token_hex(8)
            url = f"https://billing.stripe.com/p/session/{sid}"
            return 200, {"id": sid, "object": "billing_portal.session", "url": url}
        return 404, _error("invalid_request_error", f"Unrecognized request URL ({path})")

    def handler(self) -> type[BaseHTTPRequestHandler]:
        """Stripe's form-encoded API: Bearer key, JSON objects and errors back."""
        standin = self

        class Handler(StandInHandler):
            def _serve(self, method: str) -> None:
                parts = urlsplit(self.path)
                raw = parts.query
                if method == "POST":
                    raw = self.read_body().decode()
                form = dict(parse_qsl(raw))
                standin.calls.append((method, parts.path, form))
                if self.headers.get("Authorization") != f"Bearer {standin.api_key}":
                    status, body = 401, _error("invalid_request_error", "Invalid API Key provided")
                else:
                    status, body = standin._answer(method, parts.path, form)
                self.send(status, body)

            def do_GET(self) -> None:
                self._serve("GET")

            def do_POST(self) -> None:
                self._serve("POST")

        return Handler


def _error(kind: str, message: str, param: str | None = None) -> dict[str, Any]:
    error: dict[str, Any] = {"type": kind, "message": message}
    if param:
        error["param"] = param
    return {"error": error}
