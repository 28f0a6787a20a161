"""The peer: the webhook handler users write themselves (as the system this project replaces).

Starlette, Stripe's own ``stripe.Webhook.construct_event`` (signature check and parse into a
StripeObject), and an awaited JetStream publish of the raw body with the event id as
``Nats-Msg-Id``: durable like the bridge (it waits for the PubAck), but no envelope
validation, translation, CloudEvent, idempotency store, metrics or log line. bench_bridge.py
serves it with the bridge's uvicorn settings (``stripe_bridge.server.run``), so the gap to
the bridge is the handler's work, not the server's.

Environment: ``NATS_URL``, ``STRIPE_WEBHOOK_SECRET``, ``PORT``, ``HOST`` (set by
FunctionProcess).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator

import stripe
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from stripe_bridge.server import run

import nats

SECRET = os.environ["STRIPE_WEBHOOK_SECRET"]
STREAM = "STRIPE"


@contextlib.asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    """Connect to NATS before serving, drain after."""
    nc = await nats.connect(os.environ["NATS_URL"])
    app.state.js = nc.jetstream()
    yield
    await nc.drain()


async def webhook(request: Request) -> JSONResponse:
    """Verify and parse with Stripe's library, publish the body, answer after the PubAck."""
    payload = await request.body()
    try:
        event = stripe.Webhook.construct_event(
            payload, request.headers.get("stripe-signature"), SECRET
        )
    except (ValueError, stripe.SignatureVerificationError):
        return JSONResponse({"error": "invalid"}, 400)
    subject = f"stripe.{'live' if event.livemode else 'test'}.{event.type}"
    headers = {"Nats-Msg-Id": event.id}
    ack = await request.app.state.js.publish(subject, payload, stream=STREAM, headers=headers)
    return JSONResponse({"status": "published", "seq": ack.seq})


async def healthz(_request: Request) -> JSONResponse:
    """What FunctionProcess waits for."""
    return JSONResponse({"status": "alive"})


app = Starlette(
    routes=[Route("/", webhook, methods=["POST"]), Route("/healthz", healthz)], lifespan=lifespan
)

if __name__ == "__main__":
    run(app, os.environ["HOST"], int(os.environ["PORT"]))
