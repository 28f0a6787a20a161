"""Remember which Stripe events are already stored, so a redelivery is not published again.

The protocol is claim -> publish and await the PubAck -> mark done; a failed publish
releases the claim so Stripe's retry can try again. A claim is a short lease, so a
process that dies mid-publish does not block the event for long. Marking an event done
before its PubAck arrived would lose it if the publish then failed: never do that.
JetStream's duplicate window (``Nats-Msg-Id``) is the backstop behind this store.
"""

from __future__ import annotations

import asyncio
import itertools
import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from .config import IdempotencyBackend, Settings


class ClaimState(StrEnum):
    """What a claim attempt found."""

    CLAIMED = "claimed"  # this caller owns the event until it marks it done or releases it
    IN_PROGRESS = "in_progress"  # another delivery holds a live lease
    DONE = "done"  # already stored in JetStream


@dataclass(frozen=True)
class Claim:
    """The result of ``claim``; ``token`` proves ownership when releasing."""

    state: ClaimState
    token: str = ""


class IdempotencyError(Exception):
    """The store could not be reached or answered nonsense."""


class IdempotencyStore(Protocol):
    """The operations the webhook handler needs; both backends implement them."""

    backend: str

    async def claim(self, event_id: str) -> Claim:
        """Try to take the short lease on ``event_id``."""
        ...

    async def mark_done(self, event_id: str) -> None:
        """Record ``event_id`` as stored, for longer than Stripe's retry window."""
        ...

    async def release(self, event_id: str, token: str) -> None:
        """Give back a lease after a failed publish (only if still ours)."""
        ...

    async def close(self) -> None:
        """Free connections."""
        ...


#: A remembered event: (expires, done, its lease's token). A plain tuple of atomic values:
#: the garbage collector untracks it on its first pass (exact tuples only: not a NamedTuple,
#: nor a slots dataclass, which stays tracked), so the up to ``max_entries`` remembered
#: events are never promoted to its oldest generation, where they made full collections
#: come more often and each scanned them all (bench/README.md, issue #20).
_Entry = tuple[float, bool, str]


class MemoryStore:
    """Per-process store: bounded, entries expire; fine for one replica or for dev.

    Entries are kept in the order they were last written (an ``OrderedDict``): over the
    bound the oldest goes, and expired ones are dropped from the front as new ones come
    (cachetools' ``TLRUCache`` did the same with a heap and a linked list, ~4 us more per
    delivery). When the bound evicts a done entry early, JetStream's duplicate window
    still catches a redelivery within that window.
    """

    backend = IdempotencyBackend.MEMORY.value

    def __init__(self, lease_seconds: float, done_ttl_seconds: float, max_entries: int) -> None:
        self._lease = lease_seconds
        self._done_ttl = done_ttl_seconds
        self._max_entries = max_entries
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        # A lease's token only has to differ from every other in this process.
        self._tokens = itertools.count(1)

    async def claim(self, event_id: str) -> Claim:
        now = time.monotonic()
        entry = self._entries.get(event_id)
        if entry is not None and entry[0] > now:
            return Claim(ClaimState.DONE if entry[1] else ClaimState.IN_PROGRESS)
        token = str(next(self._tokens))
        self._put(event_id, (now + self._lease, False, token), now)
        return Claim(ClaimState.CLAIMED, token)

    async def mark_done(self, event_id: str) -> None:
        now = time.monotonic()
        self._put(event_id, (now + self._done_ttl, True, ""), now)

    async def release(self, event_id: str, token: str) -> None:
        entry = self._entries.get(event_id)
        if entry is not None and not entry[1] and entry[2] == token:
            del self._entries[event_id]

    async def close(self) -> None:
        return None

    def _put(self, event_id: str, entry: _Entry, now: float) -> None:
        entries = self._entries
        entries[event_id] = entry
        entries.move_to_end(event_id)
        if len(entries) > self._max_entries:
            entries.popitem(last=False)
        # Expired entries are never answered (``claim`` compares); this frees their memory.
        while (oldest := next(iter(entries.values())))[0] <= now and oldest is not entry:
            entries.popitem(last=False)


_RELEASE_IF_OURS = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


#: Pause between attempts to delete leases whose claim or release got no answer.
_FORGET_RETRY_SECONDS = 0.5


@dataclass
class _Unanswered:
    until: float  # the lease has expired by itself by then
    confirmed: int = 0


class RedisStore:
    """Store shared by every replica of every function: atomic ``SET NX PX`` leases.

    A claim that times out may still run when a stalled Redis resumes, leaving a lease
    although the answer was "not claimed" (503): such leases are deleted in the background
    as soon as Redis answers again (``_forget``), not left to block Stripe's retries.
    """

    backend = IdempotencyBackend.REDIS.value
    _DONE = "done"

    def __init__(
        self, url: str, lease_seconds: float, done_ttl_seconds: int, key_prefix: str
    ) -> None:
        import redis.asyncio as aioredis  # only the redis backend pays for this import

        self._redis = aioredis.Redis.from_url(
            url,
            socket_timeout=1.0,
            socket_connect_timeout=1.0,
            retry_on_timeout=False,
            decode_responses=True,
        )
        self._errors: tuple[type[Exception], ...] = (aioredis.RedisError, OSError)
        self._lease_ms = int(lease_seconds * 1000)
        self._done_ms = done_ttl_seconds * 1000
        self._prefix = key_prefix
        self._unanswered: dict[tuple[str, str], _Unanswered] = {}  # (key, token)
        self._forgetting: asyncio.Task[None] | None = None

    def _key(self, event_id: str) -> str:
        return f"{self._prefix}:event:{event_id}"

    async def claim(self, event_id: str) -> Claim:
        token = "claimed:" + secrets.token_hex(8)
        key = self._key(event_id)
        try:
            # Two rounds: the holder's lease may expire between our SET and GET.
            for _ in range(2):
                if await self._redis.set(key, token, nx=True, px=self._lease_ms):
                    return Claim(ClaimState.CLAIMED, token)
                current = await self._redis.get(key)
                if current == self._DONE:
                    return Claim(ClaimState.DONE)
                if current is not None:
                    return Claim(ClaimState.IN_PROGRESS)
        except self._errors as exc:
            self._forget(key, token)
            raise IdempotencyError(f"redis claim failed: {type(exc).__name__}") from exc
        return Claim(ClaimState.IN_PROGRESS)

    async def mark_done(self, event_id: str) -> None:
        try:
            await self._redis.set(self._key(event_id), self._DONE, px=self._done_ms)
        except self._errors as exc:
            raise IdempotencyError(f"redis mark_done failed: {type(exc).__name__}") from exc

    async def release(self, event_id: str, token: str) -> None:
        try:
            await self._redis.eval(_RELEASE_IF_OURS, 1, self._key(event_id), token)
        except self._errors as exc:
            self._forget(self._key(event_id), token)
            raise IdempotencyError(f"redis release failed: {type(exc).__name__}") from exc

    def _forget(self, key: str, token: str) -> None:
        """Delete the lease ``token`` on ``key`` (if it is there, or once it appears)."""
        until = time.monotonic() + self._lease_ms / 1000
        self._unanswered[(key, token)] = _Unanswered(until)
        if self._forgetting is None or self._forgetting.done():
            self._forgetting = asyncio.create_task(self._forget_unanswered())

    async def _forget_unanswered(self) -> None:
        # A lease is gone for sure after two answered deletes in a row: the commands sent
        # before the timeout sat in Redis's sockets when it resumed and ran in its first
        # loop iteration, before the second delete arrived.
        while self._unanswered:
            now = time.monotonic()
            for lease in [k for k, u in self._unanswered.items() if u.until <= now]:
                del self._unanswered[lease]
            batch = list(self._unanswered.items())
            try:
                async with self._redis.pipeline(transaction=False) as pipe:
                    for (key, token), _unanswered in batch:
                        pipe.eval(_RELEASE_IF_OURS, 1, key, token)
                    await pipe.execute()
            except self._errors:
                await asyncio.sleep(_FORGET_RETRY_SECONDS)
                continue
            for lease, unanswered in batch:
                unanswered.confirmed += 1
                if unanswered.confirmed >= 2:
                    self._unanswered.pop(lease, None)

    async def close(self) -> None:
        if self._forgetting is not None:
            # Whatever is left expires with its lease.
            self._forgetting.cancel()
        await self._redis.aclose()


def make_store(settings: Settings) -> IdempotencyStore:
    """The store the settings ask for."""
    if settings.idempotency_backend is IdempotencyBackend.REDIS:
        assert settings.redis_url is not None  # enforced by Settings
        return RedisStore(
            settings.redis_url,
            settings.idempotency_lease_seconds,
            settings.idempotency_done_ttl_seconds,
            key_prefix=f"stripe-bridge:{settings.nats_stream}",
        )
    return MemoryStore(
        settings.idempotency_lease_seconds,
        settings.idempotency_done_ttl_seconds,
        settings.idempotency_memory_max_entries,
    )
