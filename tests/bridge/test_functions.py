"""Each generated function under functions/ serves exactly its own event type.

The function modules are loaded in-process by ``stripe-bridge serve``'s loader (what the
container runs); the functions-framework CLI serves them too and publish to a real nats-server.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from stripe_bridge import registry
from stripe_bridge.config import load_settings
from stripe_bridge.ops.natsserver import NatsServer, free_port
from stripe_bridge.runtime import Runtime
from stripe_bridge.server import dev_app, load_function
from stripe_bridge.webhook import WebhookFunction
from stripe_bridge_testing.deliveries import (
    FIXTURE_OF,
    SECRET,
    fixture_event,
    post_event,
    signed_headers,
    stored_event,
)
from stripe_bridge_testing.processes import FunctionProcess
from stripe_bridge_testing.repo import REPO_ROOT


async def post(client: httpx.AsyncClient, event: dict[str, Any]) -> httpx.Response:
    body = json.dumps(event).encode()
    return await client.post("/", content=body, headers=signed_headers(body))


@pytest.mark.parametrize("event_type", [t.name for t in registry.EVENT_TYPES])
async def test_function_serves_its_own_type_only(
    shared_stream: NatsServer, monkeypatch: pytest.MonkeyPatch, event_type: str
) -> None:
    monkeypatch.setenv("STRIPE_WEBHOOK_SECRET", SECRET)
    monkeypatch.setenv("NATS_URL", shared_stream.url)
    spec = registry.lookup(event_type)
    assert spec is not None
    app, function = load_function(REPO_ROOT / "functions" / spec.function_name / "main.py")
    assert isinstance(function, WebhookFunction)
    runtime = function.runtime
    assert runtime.function_name == spec.function_name
    transport = httpx.ASGITransport(app=app)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://fn") as client:
            own = fixture_event(FIXTURE_OF[event_type], fresh_id=True)
            accepted = await post(client, own)
            assert accepted.status_code == 200, accepted.text
            assert accepted.json()["status"] == "published"
            others = [t for t in FIXTURE_OF if t != event_type]
            foreign = fixture_event(FIXTURE_OF[others[0]], fresh_id=True)
            refused = await post(client, foreign)
            assert refused.status_code == 400
            assert refused.json()["error"] == "unsupported_event_type"
    finally:
        await runtime.close()
    stored = await stored_event(shared_stream.url, own["id"])
    assert stored["type"] == f"com.stripe.{event_type}"
    assert stored["data"]["translation"] is not None


async def test_catch_all_function_serves_every_type(
    shared_stream: NatsServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STRIPE_WEBHOOK_SECRET", SECRET)
    monkeypatch.setenv("NATS_URL", shared_stream.url)
    app, function = load_function(REPO_ROOT / "functions" / registry.CATCH_ALL / "main.py")
    events = [
        fixture_event(name, fresh_id=True) for name in [*FIXTURE_OF.values(), "customer_updated"]
    ]
    try:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://fn") as client:
            answers = await asyncio.gather(*(post(client, event) for event in events))
    finally:
        await function.runtime.close()
    assert [a.json().get("status") for a in answers] == ["published"] * len(events)


#: Every method a client may send, FF's seven and the others (WebDAV's, TRACE).
METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "PROPFIND"]


async def test_an_unknown_path_is_404_whatever_the_method(
    shared_stream: NatsServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # docs/configuration.md: path first, then method. As `serve` runs one function and as
    # `dev` serves them all: TRACE on another path once got the router's 405 under dev.
    monkeypatch.setenv("STRIPE_WEBHOOK_SECRET", SECRET)
    monkeypatch.setenv("NATS_URL", shared_stream.url)
    app, function = load_function(REPO_ROOT / "functions" / registry.CATCH_ALL / "main.py")
    runtime = Runtime(
        load_settings(stripe_webhook_secret=SECRET, nats_url=shared_stream.url), "dev"
    )
    try:
        for served in (app, dev_app(runtime)):
            transport = httpx.ASGITransport(app=served)
            async with httpx.AsyncClient(transport=transport, base_url="http://fn") as client:
                for method in METHODS:
                    answer = await client.request(method, "/other/path")
                    assert answer.status_code == 404, (served, method, answer.text)
                    if method != "HEAD":
                        assert answer.json()["error"] == "not_found"
                for method in ("TRACE", "PROPFIND", "GET"):
                    answer = await client.request(method, "/")
                    assert answer.status_code == 405, (served, method, answer.text)
                    assert answer.headers["Allow"] == "POST"
    finally:
        await function.runtime.close()
        await runtime.close()


async def test_secret_rotation_accepts_both_secrets(
    shared_stream: NatsServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    old, new = SECRET, "whsec_rotated_" + "b" * 32
    monkeypatch.setenv("STRIPE_WEBHOOK_SECRET", f"{new},{old}")
    monkeypatch.setenv("NATS_URL", shared_stream.url)
    app, function = load_function(REPO_ROOT / "functions" / "invoice_paid" / "main.py")
    statuses = []
    try:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://fn") as client:
            for secret in (old, new, "whsec_neither_" + "c" * 32):
                body = json.dumps(fixture_event("invoice_paid", fresh_id=True)).encode()
                response = await client.post(
                    "/", content=body, headers=signed_headers(body, secret)
                )
                statuses.append(response.json().get("status") or response.json()["error"])
    finally:
        await function.runtime.close()
    assert statuses == ["published", "published", "signature_mismatch"]


async def test_functions_framework_cli_serves_a_function(
    stream: NatsServer, tmp_path: Path
) -> None:
    # The documented way to run one function, without stripe-bridge serve.
    port = free_port()
    source = REPO_ROOT / "functions" / "invoice_paid" / "main.py"
    command = [
        str(Path(sys.executable).parent / "functions-framework"),
        "--asgi", "--source", str(source), "--target", "handle",
        "--host", "127.0.0.1", "--port", str(port),
    ]  # fmt: skip
    env = {"STRIPE_WEBHOOK_SECRET": SECRET, "NATS_URL": stream.url}
    with FunctionProcess("invoice_paid", env, tmp_path, REPO_ROOT, port, command) as fn:
        event = fixture_event("invoice_paid", fresh_id=True)
        response = post_event(fn.url, event)
        assert response.status_code == 200, response.text
        assert response.json()["status"] == "published"
        # functions-framework routes seven methods to the target; any other gets its
        # router's plain 405 before the function, on every path (docs/configuration.md).
        assert httpx.get(fn.url + "other", timeout=10).status_code == 404
        assert httpx.request("TRACE", fn.url + "other", timeout=10).status_code == 405
    assert (await stored_event(stream.url, event["id"]))["type"] == "com.stripe.invoice.paid"
