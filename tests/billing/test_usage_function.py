"""The usage function served as a process (``stripe-bridge serve``) with real nats-server."""

from __future__ import annotations

import json
from typing import Any

import httpx
from stripe_bridge.billing.usage import provision_usage_streams
from stripe_bridge.ops.natsserver import NatsServer
from stripe_bridge.streams import USAGE_STREAM
from stripe_bridge_testing.deliveries import stream_messages

import nats

from ..conftest import FunctionFactory

TOKEN = "usage-token-1234567890"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
RECORD = {
    "meter": "tokens",
    "customer_id": "cus_Abc123",
    "value": 1234,
    "id": "agent-run-42-step-7",
    "time": "2026-01-01T10:00:00Z",
    "session_id": "sess_9",
    "properties": {"model": "small"},
}


async def test_record_usage_once_per_id(
    usage_nats: NatsServer, start_function: FunctionFactory
) -> None:
    fn = start_function("billing_usage", NATS_URL=usage_nats.url, USAGE_API_TOKEN=TOKEN)
    async with httpx.AsyncClient(base_url=fn.url, headers=AUTH, timeout=10) as client:
        first = await client.post("/", json=RECORD)
        again = await client.post("/", json=[RECORD, {**RECORD, "id": "agent-run-42-step-8"}])
    assert first.status_code == 202, first.text
    assert first.json() == {"stored": 1, "duplicates": 0, "ids": [RECORD["id"]]}
    assert again.json()["stored"] == 1
    assert again.json()["duplicates"] == 1
    messages = await stream_messages(usage_nats.url, USAGE_STREAM)
    assert [m.headers["Nats-Msg-Id"] for m in messages] == [RECORD["id"], "agent-run-42-step-8"]
    event = json.loads(messages[0].data)
    assert messages[0].subject == "usage.tokens"
    assert {k: event[k] for k in ("specversion", "id", "type", "subject", "source")} == {
        "specversion": "1.0",
        "id": RECORD["id"],
        "type": "tokens",
        "subject": "cus_Abc123",
        "source": "stripe-bridge",
    }
    assert event["data"] == {"value": 1234.0, "model": "small", "session_id": "sess_9"}
    assert event["time"].startswith("2026-01-01T10:00:00")


async def test_usage_refusals(usage_nats: NatsServer, start_function: FunctionFactory) -> None:
    fn = start_function("billing_usage", NATS_URL=usage_nats.url, USAGE_API_TOKEN=TOKEN)
    async with httpx.AsyncClient(base_url=fn.url, timeout=10) as client:
        no_token = await client.post("/", json=RECORD)
        negative = await client.post("/", json={**RECORD, "value": -1}, headers=AUTH)
        unknown_field = await client.post("/", json={**RECORD, "tokens": 3}, headers=AUTH)
        bad_meter = await client.post("/", json={**RECORD, "meter": "a.b"}, headers=AUTH)
        not_json = await client.post("/", content=b"tokens=5", headers=AUTH)
        metrics = (await client.get("/metrics")).text
    assert no_token.status_code == 401
    assert negative.status_code == 422
    assert negative.json()["error"] == "value: Input should be greater than or equal to 0"
    assert unknown_field.status_code == 422
    assert bad_meter.status_code == 422
    assert "meter" in bad_meter.json()["error"]
    assert not_json.status_code == 400
    assert await stream_messages(usage_nats.url, USAGE_STREAM) == []
    assert 'outcome="invalid"} 3.0' in metrics
    assert 'outcome="unauthorized"} 1.0' in metrics


async def test_nats_down_is_503_with_retry_after(
    usage_nats: NatsServer, start_function: FunctionFactory
) -> None:
    fn = start_function(
        "billing_usage", NATS_URL=usage_nats.url, PUBLISH_TIMEOUT="1", RETRY_AFTER_SECONDS="7"
    )
    usage_nats.stop()
    async with httpx.AsyncClient(base_url=fn.url, timeout=15) as client:
        response = await client.post("/", json=RECORD)
    assert response.status_code == 503
    assert response.headers["retry-after"] == "7"
    assert response.json()["error"] == "usage not stored, retry with the same ids"


def _nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


async def test_malformed_bodies_are_400_like_the_webhook_path(
    usage_nats: NatsServer, start_function: FunctionFactory
) -> None:
    """Too deep, UTF-16, a BOM, NaN: 400 malformed_json with one reason, counted, no 500."""
    fn = start_function("billing_usage", NATS_URL=usage_nats.url, USAGE_API_TOKEN=TOKEN)
    body = json.dumps(RECORD)
    async with httpx.AsyncClient(base_url=fn.url, headers=AUTH, timeout=30) as client:
        deep = await client.post("/", content=_nested(100_000))
        utf16 = await client.post("/", content=body.encode("utf-16"))
        bom = await client.post("/", content=b"\xef\xbb\xbf" + body.encode())
        nan = await client.post("/", content=body.replace("1234", "NaN").encode())
        metrics = (await client.get("/metrics")).text
    assert deep.status_code == 400, deep.text
    assert deep.json() == {"error": "nested deeper than 64 levels"}
    assert [r.status_code for r in (utf16, bom, nan)] == [400, 400, 400]
    assert utf16.json() == {"error": "body is not UTF-8"}
    assert 'outcome="malformed_json"} 4.0' in metrics
    assert await stream_messages(usage_nats.url, USAGE_STREAM) == []


# (field changes, the field the 422 names) for records OpenMeter would refuse or misread.
INVALID_RECORDS: list[tuple[dict[str, Any], str]] = [
    ({"source": "agent town"}, "source"),
    ({"source": ":no-scheme"}, "source"),
    ({"properties": {"value": "not-a-number"}}, "properties"),
    ({"properties": {"session_id": "x"}}, "properties"),
    ({"meter": "Tokens"}, "meter"),
    ({"meter": "api-calls"}, "meter"),
    ({"meter": "tokens__total"}, "meter"),
    ({"value": "5"}, "value"),
    ({"value": True}, "value"),
    ({"value": 2**53}, "value"),
    ({"customer_id": "cus_1\x00"}, "customer_id"),
    ({"customer_id": "cus_1\nforged log line"}, "customer_id"),
    ({"properties": {"model": "a\tb"}}, "properties"),
    ({"time": "1970-01-01T00:00:00Z"}, "time"),
    ({"time": "2999-01-01T00:00:00Z"}, "time"),
]


async def test_records_openmeter_would_refuse_or_misread_are_422(
    usage_nats: NatsServer, start_function: FunctionFactory
) -> None:
    fn = start_function("billing_usage", NATS_URL=usage_nats.url, USAGE_API_TOKEN=TOKEN)
    async with httpx.AsyncClient(base_url=fn.url, headers=AUTH, timeout=30) as client:
        answers = [
            await client.post("/", json={**RECORD, **change}) for change, _ in INVALID_RECORDS
        ]
        twice = await client.post("/", json=[RECORD, {**RECORD, "value": 1}])
        valid = await client.post(
            "/",
            json={**RECORD, "source": "https://agents.example/town?x=1#y", "meter": "api_calls"},
        )
    for (change, field), answer in zip(INVALID_RECORDS, answers, strict=True):
        assert answer.status_code == 422, (change, answer.text)
        assert answer.json()["error"].startswith(field), (change, answer.text)
    assert twice.status_code == 422
    assert twice.json() == {"error": "1.id: duplicates record 0 in this request"}
    assert valid.status_code == 202, valid.text
    assert len(await stream_messages(usage_nats.url, USAGE_STREAM)) == 1


async def test_a_full_usage_stream_is_503_and_keeps_what_it_stored(
    nats_server: NatsServer, start_function: FunctionFactory
) -> None:
    """USAGE at its max_bytes (docs/deploy.md, Sizing) refuses new records, drops none."""
    nc = await nats.connect(nats_server.url)
    try:
        js = nc.jetstream()
        # As before the limit, then as the consumers now start (an upgrade): room for a
        # few records, each stored message is ~600 bytes.
        outcomes = [
            (await provision_usage_streams(js, max_bytes=limit))[USAGE_STREAM]
            for limit in (-1, 4096, 4096)
        ]
        config = (await js.stream_info(USAGE_STREAM)).config
    finally:
        await nc.close()
    assert outcomes == ["created", "updated", "unchanged"]
    assert (config.max_bytes, config.discard) == (4096, "new")
    fn = start_function("billing_usage", NATS_URL=nats_server.url, USAGE_API_TOKEN=TOKEN)
    statuses = []
    async with httpx.AsyncClient(base_url=fn.url, headers=AUTH, timeout=15) as client:
        for i in range(20):
            response = await client.post("/", json={**RECORD, "id": f"run-{i}"})
            statuses.append(response.status_code)
            if response.status_code != 202:
                break
        metrics = (await client.get("/metrics")).text
    assert statuses[0] == 202 and statuses[-1] == 503, statuses
    assert response.headers["retry-after"]
    stored = await stream_messages(nats_server.url, USAGE_STREAM)
    assert [m.headers["Nats-Msg-Id"] for m in stored] == [
        f"run-{i}" for i in range(len(statuses) - 1)
    ]
    assert 'outcome="storage_full"' in metrics
