"""Knative function for every Stripe event type (single-endpoint setups).

Generated from stripe_bridge.registry by `stripe-bridge generate`; do not edit.
Serve it only as the image does, which drains NATS and pushes the final metrics on
SIGTERM (functions-framework would skip both):
    FUNCTION_SOURCE=<this file> stripe-bridge-serve
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from stripe_bridge.webhook import make_function

if TYPE_CHECKING:  # the image serves `function` without Starlette
    from starlette.requests import Request
    from starlette.responses import Response

function = make_function("stripe_event")


async def handle(request: Request) -> Response:
    """The functions-framework target; `stripe-bridge-serve` runs `function` itself."""
    return await function.handle_starlette(request)
