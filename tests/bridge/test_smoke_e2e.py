"""End to end through a real function process and a real nats-server."""

from __future__ import annotations

import json

from stripe_bridge.ops.natsserver import NatsServer
from stripe_bridge_testing.deliveries import fixture_event, post_event, stream_messages

from ..conftest import FunctionFactory


async def test_invoice_paid_lands_once_as_cloudevent(
    stream: NatsServer, start_function: FunctionFactory
) -> None:
    fn = start_function("invoice_paid", NATS_URL=stream.url)
    event = fixture_event("invoice_paid")
    first = post_event(fn.url, event)
    again = post_event(fn.url, event)
    assert first.status_code == 200, first.text
    assert first.json()["status"] == "published"
    assert again.status_code == 200
    assert again.json()["status"] == "duplicate"
    messages = await stream_messages(stream.url)
    assert len(messages) == 1
    (msg,) = messages
    assert msg.subject == "stripe.test.invoice.paid"
    assert msg.headers["Nats-Msg-Id"] == event["id"]
    body = json.loads(msg.data)
    assert body["specversion"] == "1.0"
    assert body["type"] == "com.stripe.invoice.paid"
    assert body["data"]["stripe"] == event
    assert body["data"]["translation"]["invoice_id"] == event["data"]["object"]["id"]
