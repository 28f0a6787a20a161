"""``stripe_bridge/asgi.py``: the plain ASGI request and answer of every function.

The answers must be what Starlette's ``JSONResponse`` sent before (same body bytes, same
header list in the same order), and the request must read what Starlette's ``Request``
read: the first header of a name in any case, the body's chunks, a disconnect mid-body.
"""

from __future__ import annotations

from typing import Any

import pytest
from starlette.responses import JSONResponse
from starlette.types import Message
from stripe_bridge.asgi import ClientDisconnected, HttpRequest, json_answer


@pytest.mark.parametrize(
    ("status", "content", "headers"),
    [
        (200, {"status": "published", "id": "evt_1", "stream": "STRIPE", "seq": 7}, {}),
        (400, {"error": "malformed_json", "detail": "body is not JSON: naïve ü"}, {}),
        (405, {"error": "method_not_allowed"}, {"Allow": "POST"}),
        (503, {"error": "puback_timeout"}, {"Retry-After": "60", "Connection": "close"}),
    ],
)
def test_json_answers_are_what_starlette_sent(
    status: int, content: Any, headers: dict[str, str]
) -> None:
    ours = json_answer(status, content, headers)
    theirs = JSONResponse(content, status, headers=headers)
    assert (ours.status, ours.body, list(ours.headers)) == (
        theirs.status_code,
        theirs.body,
        theirs.raw_headers,
    )


def test_json_answers_refuse_nan_like_starlette() -> None:
    with pytest.raises(ValueError):
        json_answer(200, {"x": float("nan")})


def scope(headers: list[tuple[bytes, bytes]]) -> dict[str, Any]:
    """An HTTP scope as uvicorn builds it (header names lower-case)."""
    return {"type": "http", "method": "POST", "path": "/a/b", "headers": headers}


async def test_a_request_reads_headers_and_the_streamed_body() -> None:
    messages: list[Message] = [
        {"type": "http.request", "body": b"ab", "more_body": True},
        {"type": "http.request", "body": b"", "more_body": True},
        {"type": "http.request", "body": b"c", "more_body": False},
    ]

    async def receive() -> Message:
        return messages.pop(0)

    headers = [(b"stripe-signature", b"t=1,v1=x"), (b"x-two", b"1"), (b"x-two", b"2")]
    request = HttpRequest(scope(headers), receive)
    assert (request.method, request.path) == ("POST", "/a/b")
    assert request.header("Stripe-Signature") == "t=1,v1=x"
    assert request.header("x-two") == "1"
    assert request.header("missing") is None
    assert [chunk async for chunk in request.stream()] == [b"ab", b"c"]


async def test_a_client_gone_mid_body_is_client_disconnected() -> None:
    messages: list[Message] = [
        {"type": "http.request", "body": b"ab", "more_body": True},
        {"type": "http.disconnect"},
    ]

    async def receive() -> Message:
        return messages.pop(0)

    request = HttpRequest(scope([]), receive)
    with pytest.raises(ClientDisconnected):
        _ = [chunk async for chunk in request.stream()]
