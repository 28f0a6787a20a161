"""Made reservation ids (issue #19, ``reserve`` at >= 0.5x a raw compare-and-set loop): the
in-process client's new ids carry their slot and quantity, so reserving under one is one KV
write; they are taken back once, by the client only; hold keys made before still work."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import ValidationError
from stripe_bridge.billing.entitlements import CheckRequest
from stripe_bridge.billing.usage_counter import count_key, usage_buckets
from stripe_bridge.ops.natsserver import NatsServer
from stripe_bridge_entitlements.client import EntitlementsClient
from stripe_bridge_entitlements.reservations import Reservations, made_hold, reservations_bucket
from stripe_bridge_entitlements.windows import Window
from stripe_bridge_testing.waiting import wait_until_async

from .test_client import provision

MARKER = "$KV.BILLING_RESERVATIONS._marker"


class Writes:
    """Subjects written to the reservations bucket, seen by a plain subscriber."""

    def __init__(self, nc: Any) -> None:
        self.nc = nc
        self.subjects: list[str] = []
        self.markers = 0

    async def seen(self, msg: Any) -> None:
        if msg.subject == MARKER:
            self.markers += 1
        else:
            self.subjects.append(msg.subject)

    async def settle(self) -> list[str]:
        """Every write made so far (the server forwards them in the order it processed
        them, before our marker, published after), then forget them."""
        markers = self.markers + 1
        await self.nc.publish(MARKER, b"")
        await wait_until_async(lambda: self.markers >= markers, 30, "the marker")
        subjects, self.subjects = self.subjects, []
        return subjects


@pytest.fixture
async def client(nats_server: NatsServer) -> AsyncIterator[EntitlementsClient]:
    await provision(nats_server.url)
    client = await EntitlementsClient.connect(nats_server.url)
    await client.serve("cus_made")
    yield client
    await client.close()


@pytest.fixture
async def direct(
    client: EntitlementsClient, nats_server: NatsServer
) -> AsyncIterator[tuple[Any, Reservations]]:
    """The day's count bucket and the ledger on a connection of the test's own: what the
    function and count-usage use (hold keys; they take no made id's word)."""
    import nats

    nc = await nats.connect(nats_server.url)
    js = nc.jetstream()
    yield (await usage_buckets(js))[Window.DAY], Reservations(await reservations_bucket(js), 300)
    await nc.close()


def _key() -> str:
    return count_key("cus_made", "api_calls", Window.DAY, datetime.now(UTC))


async def _left(client: EntitlementsClient, expected: float) -> None:
    await wait_until_async(
        lambda: client.check("cus_made", "api_calls").remaining == expected, 10, f"{expected}"
    )


async def test_a_reservation_under_a_new_id_is_one_kv_write(
    client: EntitlementsClient, nats_server: NatsServer
) -> None:
    import nats

    nc = await nats.connect(nats_server.url)
    try:
        writes = Writes(nc)
        await nc.subscribe("$KV.BILLING_RESERVATIONS.>", cb=writes.seen)
        await nc.flush()
        for _ in range(3):  # the first from an empty ledger, then at the watched revision
            await writes.settle()
            held = await client.reserve("cus_made", "api_calls", 2)
            assert held.allowed and held.reservation_id
            assert await writes.settle() == [f"$KV.BILLING_RESERVATIONS.L.{_key()}"]
    finally:
        await nc.close()


async def test_made_ids_are_taken_back_once_and_only_by_the_client(
    client: EntitlementsClient, direct: tuple[Any, Reservations]
) -> None:
    # free: 100 api_calls a day.
    ids = []
    for quantity in (5, 7, 11):
        held = await client.reserve("cus_made", "api_calls", quantity)
        assert held.allowed and held.reservation_id
        ids.append(held.reservation_id)
    released, recorded, kept = ids
    await _left(client, 77)
    assert await client.release("cus_made", "api_calls", released)
    assert not await client.release("cus_made", "api_calls", released)
    await client.record_usage("cus_made", "api_calls", 7, reservation_id=recorded)
    assert not await client.release("cus_made", "api_calls", recorded)  # already usage
    await _left(client, 82)  # the recorded 7 stay held until counted
    # What trusts hold keys only (HTTP release, count-usage's hand-over) frees nothing of a
    # made id: its slot and quantity are the caller's word.
    counts, trusted = direct
    assert not await trusted.release(counts, _key(), kept)
    assert not await trusted.consume(counts, _key(), kept, 10**9)
    # Nor does a made id under another count key (window, meter or customer).
    other = count_key("cus_other", "api_calls", Window.DAY, datetime.now(UTC))
    assert made_hold(other, kept) is None and made_hold(_key(), kept) is not None
    assert await client.release("cus_made", "api_calls", kept)
    await _left(client, 93)


async def test_hold_keys_made_before_made_ids_are_still_taken_back(
    client: EntitlementsClient, direct: tuple[Any, Reservations]
) -> None:
    # Reservations as the code before made ids held them (and the function still does):
    # a plain new id and its hold key.
    counts, before = direct
    ids = [str(uuid.uuid4()) for _ in range(2)]
    for rid in ids:
        held = await before.reserve(counts, _key(), 100, 10, rid, new_id=True)
        assert held.allowed
    await _left(client, 80)
    assert await client.release("cus_made", "api_calls", ids[0])
    assert not await client.release("cus_made", "api_calls", ids[0])
    await client.record_usage("cus_made", "api_calls", 10, reservation_id=ids[1])
    assert not await client.release("cus_made", "api_calls", ids[1])
    await _left(client, 90)


async def test_nobody_gives_a_made_id(client: EntitlementsClient) -> None:
    held = await client.reserve("cus_made", "api_calls", 1)
    assert held.reservation_id and held.reservation_id.startswith("~")
    with pytest.raises(ValueError, match="made by reserve"):
        await client.reserve("cus_made", "api_calls", 1, reservation_id=held.reservation_id)
    with pytest.raises(ValidationError):
        CheckRequest(
            customer="cus_made", meter="api_calls", reserve=True, reservation_id=held.reservation_id
        )


async def test_a_made_id_retried_after_a_lost_answer_holds_once(
    client: EntitlementsClient, direct: tuple[Any, Reservations]
) -> None:
    counts, ledger = direct
    rid = ledger.make_id(_key(), 4)
    # The first answer is lost; the caller asks again with the same made id.
    for _ in range(2):
        held = await ledger.reserve(counts, _key(), 100, 4, rid, new_id=True)
        assert held.allowed and held.reservation_id == rid
    with pytest.raises(ValueError, match="another quantity"):
        await ledger.reserve(counts, _key(), 100, 5, rid, new_id=True)
    await _left(client, 96)
    assert await client.release("cus_made", "api_calls", rid)
    await _left(client, 100)
