"""``jetstream``: what the publisher alone promises, against a real nats-server.

A message is either stored (a PubAck) or refused with a reason an operator can act on;
a message the server would refuse for its size is never sent (the server would close the
connection under every publish in flight on it).
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
from stripe_bridge.config import load_settings
from stripe_bridge.jetstream import (
    JetStreamPublisher,
    MessageTooLarge,
    PublishError,
    Stored,
)
from stripe_bridge.ops.natsserver import NatsServer
from stripe_bridge.reasons import Reason

from .conftest import provision_stream

MAX_PAYLOAD = 4096
HEADERS = {"Nats-Msg-Id": "", "ce-specversion": "1.0", "ce-type": "com.stripe.invoice.paid"}


@pytest.fixture
def small_payload_server(tmp_path: Path) -> Iterator[NatsServer]:
    """A nats-server whose ``max_payload`` is 4 KiB, with the STRIPE stream."""
    conf = tmp_path / "nats.conf"
    store = tmp_path / "jetstream"
    conf.write_text(f'max_payload: {MAX_PAYLOAD}\njetstream {{ store_dir: "{store}" }}\n')
    with NatsServer(store, config_file=conf) as server:
        provision_stream(server.url)
        yield server


def _headers() -> dict[str, str]:
    return {**HEADERS, "Nats-Msg-Id": "evt_" + secrets.token_hex(12)}


async def test_around_max_payload_a_message_is_stored_or_refused_never_sent_too_big(
    small_payload_server: NatsServer,
) -> None:
    # Every body size from well under to just over the limit, headers included as nats-py
    # puts them on the wire (it adds Nats-Expected-Stream itself): each one is stored or
    # refused unsent, and the connection survives all of them.
    publisher = JetStreamPublisher(
        load_settings(nats_url=small_payload_server.url, publish_timeout=1)
    )
    header_bytes = len(b"NATS/1.0\r\n\r\n") + sum(
        len(k) + len(v) + 4 for k, v in _headers().items()
    )
    first = MAX_PAYLOAD - header_bytes - 60
    answers: dict[int, str] = {}
    try:
        for size in range(first, MAX_PAYLOAD - header_bytes + 10):
            try:
                stored = await publisher.publish(
                    "stripe.test.invoice.paid", b"x" * size, _headers()
                )
            except MessageTooLarge:
                answers[size] = "too_large"
            except PublishError as exc:
                answers[size] = exc.reason.value
            else:
                assert isinstance(stored, Stored) and not stored.duplicate
                answers[size] = "stored"
        assert publisher.connected
    finally:
        await publisher.close()
    outcomes = list(answers.values())
    assert set(outcomes) == {"stored", "too_large"}, {s: a for s, a in answers.items() if a}
    # One boundary: stored up to it, refused unsent beyond it.
    cut = outcomes.index("too_large")
    assert outcomes == ["stored"] * cut + ["too_large"] * (len(outcomes) - cut)


@pytest.fixture
def tiny_stream(nats_server: NatsServer) -> NatsServer:
    """The STRIPE stream limited to 8 KiB, discarding new messages when full."""
    provision_stream(nats_server.url, max_bytes=8192)
    return nats_server


async def test_a_full_stream_is_storage_full_not_stream_unavailable(
    tiny_stream: NatsServer,
) -> None:
    # max_bytes with discard new (StreamSpec.max_bytes): JetStream answers error 10077
    # "maximum bytes exceeded" with code 503, which is no lost quorum.
    nats_server = tiny_stream
    publisher = JetStreamPublisher(load_settings(nats_url=nats_server.url))
    failure = None
    try:
        for _ in range(20):
            try:
                await publisher.publish("stripe.test.invoice.paid", b"x" * 1024, _headers())
            except PublishError as exc:
                failure = exc.reason
                break
        assert publisher.connected
    finally:
        await publisher.close()
    assert failure is Reason.STORAGE_FULL


async def test_a_missing_stream_is_no_stream(nats_server: NatsServer) -> None:
    publisher = JetStreamPublisher(load_settings(nats_url=nats_server.url))
    try:
        with pytest.raises(PublishError) as raised:
            await publisher.publish("stripe.test.invoice.paid", b"{}", _headers())
        assert not await publisher.ready()
    finally:
        await publisher.close()
    assert raised.value.reason is Reason.NO_STREAM


async def test_the_callers_headers_are_left_as_they_were(
    small_payload_server: NatsServer,
) -> None:
    publisher = JetStreamPublisher(
        load_settings(nats_url=small_payload_server.url, publish_timeout=1)
    )
    headers = _headers()
    sent = dict(headers)
    try:
        await publisher.publish("stripe.test.invoice.paid", b"{}", headers)
        assert await publisher.ready()
    finally:
        await publisher.close()
    assert headers == sent
