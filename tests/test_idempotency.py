"""``idempotency``: claim → done or release, the same on both backends (real redis-server).

What the store alone promises: one delivery of an event holds it at a time, a stored one
stays stored, a released or expired lease lets the next delivery claim it, and only the
lease's owner can release it. Outages of Redis are in tests/bridge/test_faults.py.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator

import pytest
from stripe_bridge.idempotency import (
    ClaimState,
    IdempotencyError,
    IdempotencyStore,
    MemoryStore,
    RedisStore,
)
from stripe_bridge.ops.natsserver import free_port
from stripe_bridge_testing.processes import RedisServer
from stripe_bridge_testing.waiting import wait_until_async

LEASE = 0.3


@pytest.fixture(params=["memory", "redis"])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[IdempotencyStore]:
    """A store with a short lease on each backend."""
    made: IdempotencyStore
    if request.param == "memory":
        made = MemoryStore(LEASE, done_ttl_seconds=60, max_entries=100)
    else:
        redis: RedisServer = request.getfixturevalue("redis_server")
        prefix = "test-" + secrets.token_hex(4)
        made = RedisStore(redis.url, LEASE, done_ttl_seconds=60, key_prefix=prefix)
    try:
        yield made
    finally:
        await made.close()


def _event_id() -> str:
    return "evt_" + secrets.token_hex(12)


async def test_one_claim_at_a_time_then_done_forever(store: IdempotencyStore) -> None:
    event_id = _event_id()
    first = await store.claim(event_id)
    assert first.state is ClaimState.CLAIMED and first.token
    assert (await store.claim(event_id)).state is ClaimState.IN_PROGRESS
    await store.mark_done(event_id)
    assert (await store.claim(event_id)).state is ClaimState.DONE
    # A late release of the old lease does not undo "stored".
    await store.release(event_id, first.token)
    assert (await store.claim(event_id)).state is ClaimState.DONE


async def test_a_release_lets_the_next_delivery_claim(store: IdempotencyStore) -> None:
    event_id = _event_id()
    first = await store.claim(event_id)
    await store.release(event_id, first.token)
    second = await store.claim(event_id)
    assert second.state is ClaimState.CLAIMED
    assert second.token != first.token


async def test_only_the_owner_releases(store: IdempotencyStore) -> None:
    event_id = _event_id()
    await store.claim(event_id)
    await store.release(event_id, "not-the-token")
    assert (await store.claim(event_id)).state is ClaimState.IN_PROGRESS


async def test_an_abandoned_lease_expires(store: IdempotencyStore) -> None:
    # A process that died mid-publish blocks its event only for the lease.
    event_id = _event_id()
    assert (await store.claim(event_id)).state is ClaimState.CLAIMED

    async def claimable() -> bool:
        return (await store.claim(event_id)).state is ClaimState.CLAIMED

    await wait_until_async(claimable, 30, "the lease expired")


async def test_an_unreachable_redis_is_an_idempotency_error() -> None:
    store = RedisStore(f"redis://127.0.0.1:{free_port()}", LEASE, 60, key_prefix="x")
    try:
        with pytest.raises(IdempotencyError):
            await store.claim(_event_id())
        with pytest.raises(IdempotencyError):
            await store.mark_done(_event_id())
    finally:
        await store.close()


def test_the_memory_store_is_bounded() -> None:
    import asyncio

    async def fill() -> list[ClaimState]:
        small = MemoryStore(60, 60, max_entries=3)
        ids = [_event_id() for _ in range(5)]
        for event_id in ids:
            await small.claim(event_id)
            await small.mark_done(event_id)
        # Newest first: a claim of an evicted id would evict the next one.
        return [(await small.claim(event_id)).state for event_id in reversed(ids)]

    # The two oldest were evicted (JetStream's duplicate window is their backstop).
    assert asyncio.run(fill()) == [ClaimState.DONE] * 3 + [ClaimState.CLAIMED] * 2


def test_the_memory_store_gives_the_garbage_collector_nothing_to_scan() -> None:
    # Issue #20: up to 100,000 remembered events live as long as the process. Entries the
    # collector tracks are promoted to its oldest generation, make its full collections
    # come more often and each scan them all (~11 ms at the bound, in a webhook's path).
    import asyncio
    import gc

    async def fill() -> MemoryStore:
        store = MemoryStore(60, 60, max_entries=100)
        for _ in range(50):
            event_id = _event_id()
            await store.claim(event_id)
            await store.mark_done(event_id)
        in_progress = _event_id()
        await store.claim(in_progress)
        return store

    store = asyncio.run(fill())
    gc.collect()  # untracks what holds only atomic values
    entries = list(store._entries.values())
    assert len(entries) == 51
    assert not any(gc.is_tracked(entry) for entry in entries)
