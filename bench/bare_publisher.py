"""A bare HTTP -> JetStream publisher: the bridge's server stack without the bridge's work.

bench_bridge.py runs it as a second reference between the plain ``js.publish`` ceiling and
the bridge: the same uvicorn settings (``stripe_bridge.server.run``) and the same NATS
client, but no signature check, validation, translation, CloudEvent, idempotency or
metrics. The gap between this row and the bridge's is what the bridge's own work costs;
the gap between this row and the ceiling is the Python HTTP server's.

Environment: ``NATS_URL``, ``PORT``, ``HOST`` (set by FunctionProcess); ``BARE_STACK=h11``
hides httptools and uvloop from uvicorn, which then falls back to h11 and asyncio, as in an
image without them (its default "auto" picks them when they are installed).
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

from starlette.types import Message, Receive, Scope, Send
from stripe_bridge.message import CONTENT_TYPE, MSG_ID_HEADER
from stripe_bridge.server import run

SUBJECT = "stripe.test.invoice.paid"
STREAM = "STRIPE"


class BarePublisher:
    """An ASGI app: ``GET /healthz`` answers 200; any POST body is published as it came."""

    def __init__(self, nats_url: str) -> None:
        self.nats_url = nats_url
        self.nc: Any = None
        self.js: Any = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Handle lifespan (connect, drain) and HTTP requests."""
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
        elif scope["type"] == "http":
            await self._http(scope, receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        import nats

        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self.nc = await nats.connect(self.nats_url)
                self.js = self.nc.jetstream()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.nc.drain()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        chunks = []
        more = True
        while more:
            message: Message = await receive()
            chunks.append(message.get("body", b""))
            more = message.get("more_body", False)
        if scope["path"] == "/healthz":
            await _answer(send, {"status": "alive"})
            return
        body = b"".join(chunks)
        headers = {"Content-Type": CONTENT_TYPE, MSG_ID_HEADER: json.loads(body)["id"]}
        ack = await self.js.publish(SUBJECT, body, stream=STREAM, headers=headers)
        await _answer(send, {"status": "published", "seq": ack.seq})


async def _answer(send: Send, payload: dict[str, Any]) -> None:
    body = json.dumps(payload).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


if __name__ == "__main__":
    if os.environ.get("BARE_STACK") == "h11":
        sys.modules["httptools"] = None  # type: ignore[assignment]  # import fails: h11
        sys.modules["uvloop"] = None  # type: ignore[assignment]  # import fails: asyncio
    run(BarePublisher(os.environ["NATS_URL"]), os.environ["HOST"], int(os.environ["PORT"]))
