"""Knative function: Customer Portal session (see docs/billing.md).

Generated from stripe_bridge.billing.catalog by `stripe-bridge generate`; do not edit.
Serve it only as the image does, which drains NATS and pushes the final metrics on
SIGTERM (functions-framework would skip both): stripe-bridge-serve --source <this file>
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from stripe_bridge.billing.endpoints import make_portal_function
from stripe_bridge.http import start

if TYPE_CHECKING:  # the image serves `function` without Starlette
    from starlette.requests import Request
    from starlette.responses import Response

function = start("billing_portal", make_portal_function)


async def handle(request: Request) -> Response:
    """The functions-framework target; `stripe-bridge-serve` runs `function` itself."""
    return await function.handle_starlette(request)
