"""The request and the answer of every function, in plain ASGI.

No Starlette objects on the request path (they cost a webhook ~10-20 us of CPU and the
cold start their imports): ``HttpRequest`` reads what a function needs from the ASGI scope
and ``receive``; ``Answer`` is the status, header list and body ``send`` writes. Answers
are byte for byte what Starlette's ``JSONResponse`` and ``Response`` sent before (compact
JSON, UTF-8, the function's headers, then ``content-length``, then ``content-type``).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from starlette.types import Receive, Scope, Send

JSON_CONTENT_TYPE = b"application/json"
#: ASGI scope extension set by the server's protocol (``server.header_timeout_protocol``):
#: its ``received`` tells whether the request's whole body is already buffered.
BODY_RECEIVED = "stripe_bridge.body_received"
#: One encoder for every answer (``json.dumps`` with options builds one per call).
_JSON = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":"))


class ClientDisconnected(Exception):
    """The client closed the connection before its request body was complete."""


class HttpRequest:
    """One HTTP request: method, path, headers by name, the body as it streams in."""

    __slots__ = ("_body_received", "_headers", "_receive", "method", "path")

    def __init__(self, scope: Scope, receive: Receive) -> None:
        self.method: str = scope["method"]
        #: The decoded path, as the server received it (without the query string).
        self.path: str = scope["path"]
        self._headers: list[tuple[bytes, bytes]] = scope["headers"]
        self._receive = receive
        extension = (scope.get("extensions") or {}).get(BODY_RECEIVED)
        self._body_received: Callable[[], bool] | None = (
            extension["received"] if extension else None
        )

    def body_received(self) -> bool:
        """Whether the whole body is already here (reading it cannot wait); False if unknown."""
        return self._body_received is not None and self._body_received()

    def header(self, name: str) -> str | None:
        """The first value of header ``name`` (any case), or None."""
        key = name.lower().encode("latin-1")
        for raw_name, value in self._headers:
            if raw_name == key:
                return value.decode("latin-1")
        return None

    async def stream(self) -> AsyncIterator[bytes]:
        """The body's non-empty chunks as they arrive; ClientDisconnected if the client leaves."""
        while True:
            message = await self._receive()
            if message["type"] == "http.request":
                chunk = message.get("body", b"")
                if chunk:
                    yield chunk
                if not message.get("more_body", False):
                    return
            elif message["type"] == "http.disconnect":
                raise ClientDisconnected


@dataclass(frozen=True, slots=True)
class Answer:
    """What is sent back: status, ASGI headers, body (immutable: the probes' are shared)."""

    status: int
    headers: tuple[tuple[bytes, bytes], ...]
    body: bytes

    async def send(self, send: Send) -> None:
        """Write the answer to an ASGI ``send``."""
        await send({"type": "http.response.start", "status": self.status, "headers": self.headers})
        await send({"type": "http.response.body", "body": self.body})


def answer(
    status: int, body: bytes, content_type: bytes, headers: Mapping[str, str] | None = None
) -> Answer:
    """An answer with ``headers`` (names lower-cased), its length and its content type."""
    raw = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in (headers or {}).items()]
    raw.append((b"content-length", str(len(body)).encode("latin-1")))
    raw.append((b"content-type", content_type))
    return Answer(status, tuple(raw), body)


def json_answer(status: int, content: Any, headers: Mapping[str, str] | None = None) -> Answer:
    """``content`` as compact UTF-8 JSON (NaN refused) with ``status`` and ``headers``."""
    return answer(status, _JSON.encode(content).encode("utf-8"), JSON_CONTENT_TYPE, headers)
