"""``cas.update``, the one read-modify-write loop on NATS KV, against a real nats-server:
a lost write is read again and retried, the bound ends in the one Contention error, and a
missing or deleted key reads as absent and is created."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from stripe_bridge.ops.natsserver import NatsServer
from stripe_bridge_entitlements import cas

from ..conftest import WriteBetween

KEY = "k"


@pytest.fixture
async def kv(nats_server: NatsServer) -> AsyncIterator[Any]:
    """A fresh bucket (history 1, as the billing buckets) on a real nats-server."""
    from nats.js.api import KeyValueConfig

    import nats

    nc = await nats.connect(nats_server.url)
    try:
        yield await nc.jetstream().create_key_value(KeyValueConfig(bucket="CAS", history=1))
    finally:
        await nc.close()


def _number(entry: cas.Entry) -> int:
    return 0 if entry.value is None else int(entry.value)


class Rival:
    """A step adding ``add`` to the number at KEY, after another writer changed it first
    (the first ``races`` calls): the loop's write then loses to a real conflict."""

    def __init__(self, kv: Any, add: int, races: int) -> None:
        self.kv = kv
        self.add = add
        self.races = races
        self.calls = 0
        self.conflicts = 0

    async def step(self, entry: cas.Entry, _: object) -> tuple[bytes | None, int]:
        self.calls += 1
        if self.calls <= self.races:
            await self.kv.put(KEY, str(_number(entry) + 100).encode())
        new = _number(entry) + self.add
        return str(new).encode(), new

    def conflict(self) -> None:
        self.conflicts += 1


async def test_a_lost_write_is_read_again_and_retried(kv: Any) -> None:
    rival = Rival(kv, add=1, races=1)
    result = await cas.update(kv, KEY, rival.step, on_conflict=rival.conflict)
    # The first write lost to the rival's 100; the second read it and added to it.
    assert result == 101
    assert (rival.calls, rival.conflicts) == (2, 1)
    assert _number(await cas.read(kv, KEY)) == 101


async def test_losing_every_attempt_raises_contention(kv: Any) -> None:
    rival = Rival(kv, add=1, races=10)
    with pytest.raises(cas.Contention):
        await cas.update(kv, KEY, rival.step, attempts=3, on_conflict=rival.conflict)
    assert (rival.calls, rival.conflicts) == (3, 3)
    # Only the rival's writes landed.
    assert _number(await cas.read(kv, KEY)) == 300


async def test_a_step_writing_nothing_returns_without_writing(kv: Any) -> None:
    async def step(entry: cas.Entry, _: object) -> tuple[bytes | None, str]:
        return None, "unchanged"

    assert await cas.update(kv, KEY, step) == "unchanged"
    assert await cas.read(kv, KEY) == cas.Entry()


async def test_two_writers_racing_on_one_key_both_land(
    kv: Any, write_between: WriteBetween
) -> None:
    conflicts = 0

    def conflict() -> None:
        nonlocal conflicts
        conflicts += 1

    async def add(n: int) -> int:
        async def step(entry: cas.Entry, _: object) -> tuple[bytes | None, int]:
            return str(_number(entry) + n).encode(), n

        return await cas.update(kv, KEY, step, on_conflict=conflict)

    async def other_writer(_kv: Any) -> None:
        assert await add(10) == 10

    # The other writer adds 10 between this one's read of the absent key and its create:
    # the create loses and is retried on top of the other's.
    write_between(other_writer)
    assert await add(1) == 1
    assert _number(await cas.read(kv, KEY)) == 11
    assert conflicts == 1


@pytest.mark.parametrize("deleted", [False, True])
async def test_missing_or_deleted_key_reads_as_absent_and_is_created(
    kv: Any, deleted: bool
) -> None:
    if deleted:
        # nats-py reads a tombstone as KeyNotFoundError, like a key never written.
        await kv.put(KEY, b"5")
        await kv.delete(KEY)
    seen: list[cas.Entry] = []

    async def step(entry: cas.Entry, _: object) -> tuple[bytes | None, None]:
        seen.append(entry)
        return b"1", None

    await cas.update(kv, KEY, step)
    assert seen == [cas.Entry()]
    assert (await cas.read(kv, KEY)).value == b"1"
