"""Real published messages: every fixture posted to a real function on a real nats-server.

The package's tests parse and validate exactly what the bridge stored, never a hand-made
CloudEvent: typed types (pre-basil and basil), untranslated types, and one registered type
whose translation fails (stored untranslated with ``translationerror``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from stripe_bridge.ops.natsserver import NatsServer
from stripe_bridge_testing.deliveries import FIXTURES, fixture_event, post_event, stream_messages

from ..conftest import function_process, provision_stream

#: A registered type whose translation fails: an invoice without its required currency.
BROKEN_INVOICE_ID = "evt_broken_invoice_without_currency"


@dataclass(frozen=True)
class Published:
    """One stored message, as a consumer reads it."""

    seq: int
    subject: str
    headers: dict[str, str]
    body: bytes


def broken_invoice() -> dict[str, object]:
    """invoice.paid whose object lacks ``currency``: valid envelope, failing translation."""
    event = fixture_event("invoice_paid")
    event["id"] = BROKEN_INVOICE_ID
    del event["data"]["object"]["currency"]
    return event


@pytest.fixture(scope="package")
def published(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Published]]:
    """Every fixture of tests/fixtures and the broken invoice, stored by the catch-all."""
    server = NatsServer(tmp_path_factory.mktemp("nats"))
    server.start()
    try:
        provision_stream(server.url)
        fn = function_process("stripe_event", tmp_path_factory.mktemp("fn"), NATS_URL=server.url)
        try:
            events = [fixture_event(p.stem) for p in sorted(FIXTURES.glob("*.json"))]
            for event in [*events, broken_invoice()]:
                response = post_event(fn.url, event)
                assert response.status_code == 200, response.text
        finally:
            fn.stop()
        messages = asyncio.run(stream_messages(server.url))
        yield [Published(m.seq, m.subject, dict(m.headers or {}), m.data) for m in messages]
    finally:
        server.stop()
