"""``webhook``: one delivery from request to reply, in process against a real nats-server.

What the pipeline alone promises: its steps run in the documented order (path, method,
body, signature, JSON, envelope, type, ingest), each refusal is its ``Reason``: that
status, ``{"error": reason, "detail"}`` (5xx: ``Retry-After``, no detail), counted once
under that reason and logged in one line, and ingest's results are the contract's answers.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from stripe_bridge.config import load_settings
from stripe_bridge.ops.natsserver import NatsServer
from stripe_bridge.reasons import UNKNOWN_TYPE, Reason, Refused
from stripe_bridge.runtime import Runtime
from stripe_bridge.server import FunctionApp
from stripe_bridge.webhook import WebhookFunction
from stripe_bridge_testing.deliveries import SECRET, fixture_event, signed_headers

from .conftest import provision_stream

Client = tuple[httpx.AsyncClient, WebhookFunction]


@pytest.fixture
async def invoice_paid(stream: NatsServer) -> AsyncIterator[Client]:
    """The invoice.paid function on ``/``, in process, with a 16 KiB body limit."""
    settings = load_settings(
        stripe_webhook_secret=SECRET, nats_url=stream.url, max_body_bytes=16384
    )
    function = WebhookFunction(Runtime(settings, "invoice_paid"), frozenset({"invoice.paid"}))
    transport = httpx.ASGITransport(app=FunctionApp(function))
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://fn") as client:
            yield client, function
    finally:
        await function.runtime.close()


def _count(function: WebhookFunction, reason: str, event_type: str = UNKNOWN_TYPE) -> float:
    labels = {"event_type": event_type, "outcome": Reason[reason.upper()].outcome, "reason": reason}
    value = function.runtime.metrics.registry.get_sample_value
    return value("stripe_bridge_webhooks_total", labels) or 0.0


def _signed(event: dict[str, Any]) -> tuple[bytes, dict[str, str]]:
    body = json.dumps(event).encode()
    return body, signed_headers(body)


async def test_each_check_refuses_in_order(
    invoice_paid: Client, caplog: pytest.LogCaptureFixture
) -> None:
    client, function = invoice_paid
    caplog.set_level(logging.INFO, logger="stripe_bridge")
    good, headers = _signed(fixture_event("invoice_paid", fresh_id=True))
    charge, charge_headers = _signed(fixture_event("charge_succeeded", fresh_id=True))
    not_json = b'{"id": '
    # Each request fails exactly one check, all the earlier ones passing, so the answer
    # shows which check runs before which.
    cases: list[tuple[str, httpx.Request]] = [
        ("not_found", client.build_request("GET", "/other", content=b"x" * 20000)),
        ("method_not_allowed", client.build_request("PUT", "/", content=b"x" * 20000)),
        ("body_too_large", client.build_request("POST", "/", content=b"x" * 20000)),
        ("missing_signature", client.build_request("POST", "/", content=not_json)),
        (
            "signature_mismatch",
            client.build_request("POST", "/", content=not_json, headers=headers),
        ),
        (
            "malformed_json",
            client.build_request("POST", "/", content=not_json, headers=signed_headers(not_json)),
        ),
        (
            "unsupported_event_type",
            client.build_request("POST", "/", content=charge, headers=charge_headers),
        ),
    ]
    for reason, request in cases:
        answer = await client.send(request)
        assert answer.status_code == Reason[reason.upper()].status, (reason, answer.text)
        assert answer.json()["error"] == reason
        assert answer.json()["detail"]
        assert "Retry-After" not in answer.headers
    assert (await client.post("/", content=good, headers=headers)).status_code == 200
    for reason, _request in cases:
        event_type = "charge.succeeded" if reason == "unsupported_event_type" else UNKNOWN_TYPE
        assert _count(function, reason, event_type) == 1, reason
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("webhook ")]
    assert len(lines) == len(cases) + 1
    assert all(
        f"reason={reason} " in line for (reason, _), line in zip(cases, lines[:-1], strict=True)
    )
    assert "type=charge.succeeded" in lines[-2]
    assert "event_id=evt_" in lines[-2]
    assert function.runtime.metrics.inflight._value.get() == 0


async def test_ingest_results_are_the_contracts_answers(invoice_paid: Client) -> None:
    client, function = invoice_paid
    event = fixture_event("invoice_paid", fresh_id=True)
    body, headers = _signed(event)
    first = await client.post("/", content=body, headers=headers)
    assert first.status_code == 200
    assert first.json() == {"status": "published", "id": event["id"], "stream": "STRIPE", "seq": 1}
    again = await client.post("/", content=body, headers=headers)
    assert again.json() == {"status": "duplicate", "id": event["id"]}

    held = fixture_event("invoice_paid", fresh_id=True)
    await function.runtime.store.claim(held["id"])  # another delivery is storing it
    body, headers = _signed(held)
    busy = await client.post("/", content=body, headers=headers)
    assert busy.status_code == 409
    assert busy.json()["error"] == "in_progress"
    assert busy.headers["Retry-After"] == "30"


def test_every_reason_is_answered_with_its_status(invoice_paid: Client) -> None:
    _client, function = invoice_paid
    for reason in Reason:
        reply = function.refused(Refused(reason, "why", {"Connection": "close"}))
        assert (reply.status, reply.reason) == (reason.status, reason.value)
        assert reply.headers["Connection"] == "close"
        if reason.status >= 500:
            assert reply.outcome == "failed"
            assert reply.body == {"error": reason.value}
            assert reply.headers["Retry-After"] == "30"
        else:
            assert reply.outcome == "rejected"
            assert reply.body == {"error": reason.value, "detail": "why"}
            assert "Retry-After" not in reply.headers


async def test_a_nats_outage_is_503_with_retry_after_under_the_event_type(
    invoice_paid: Client, stream: NatsServer
) -> None:
    client, function = invoice_paid
    stream.stop()
    body, headers = _signed(fixture_event("invoice_paid", fresh_id=True))
    answer = await client.post("/", content=body, headers=headers)
    assert answer.status_code == 503
    assert answer.json()["error"] in {"nats_unavailable", "puback_timeout"}
    assert answer.headers["Retry-After"] == "30"
    assert _count(function, answer.json()["error"], "invoice.paid") == 1


@pytest.fixture
def small_payload_stream(tmp_path: Path) -> Iterator[NatsServer]:
    """A nats-server with ``max_payload`` 16 KiB and the STRIPE stream."""
    conf, store = tmp_path / "nats.conf", tmp_path / "jetstream"
    conf.write_text(f'max_payload: 16384\njetstream {{ store_dir: "{store}" }}\n')
    with NatsServer(store, config_file=conf) as server:
        provision_stream(server.url)
        yield server


async def test_near_max_payload_an_event_is_stored_or_413_never_503(
    small_payload_stream: NatsServer,
) -> None:
    # Bodies just under the size whose CloudEvent fills max_payload were once answered 503
    # puback_timeout on every retry, each dropping the function's NATS connection.
    settings = load_settings(
        stripe_webhook_secret=SECRET,
        nats_url=small_payload_stream.url,
        max_body_bytes=65536,
        publish_timeout=2,
    )
    function = WebhookFunction(Runtime(settings, "stripe_event"), None)
    transport = httpx.ASGITransport(app=FunctionApp(function))

    async def status_with(padding: int) -> int:
        event = fixture_event("invoice_paid", fresh_id=True)
        event["data"]["object"]["metadata"] = {"padding": "x" * padding}
        body, headers = _signed(event)
        answer = await client.post("/", content=body, headers=headers)
        assert answer.status_code in (200, 413), (padding, answer.text)
        return answer.status_code

    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://fn") as client:
            # The smallest padding refused, found by bisection, then every size around it.
            stored, refused = 0, 16384
            assert await status_with(stored) == 200
            assert await status_with(refused) == 413
            while refused - stored > 1:
                middle = (stored + refused) // 2
                if await status_with(middle) == 200:
                    stored = middle
                else:
                    refused = middle
            answers = [await status_with(p) for p in range(refused - 60, refused + 20)]
        assert answers == [200] * 60 + [413] * 20
        assert function.runtime.metrics.nats_connected._value.get() == 1
        assert _count(function, "event_too_large", "invoice.paid") >= 20
    finally:
        await function.runtime.close()
