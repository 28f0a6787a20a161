"""Compare-and-set on NATS KV: the one read-modify-write loop every KV write uses.

A write names the revision it read; the server refuses it when another writer changed the
key in between, and the loop reads again. That is what makes two reservations racing for
the last unit never both succeed, and two projector replicas never lose each other's
update. Every read-modify-write (the reservations ledger, the tier projector, the
lifecycle gate, the usage counter) goes through ``update``: one loop, one attempts bound
and backoff, one ``Contention`` error when the bound is reached.
"""

from __future__ import annotations

import asyncio
import functools
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

#: Attempts before a write gives up as contended (each one a read and a write).
CAS_ATTEMPTS = 50

R = TypeVar("R")


class Contention(Exception):
    """Compare-and-set kept losing to other writers of the same key."""


@dataclass(frozen=True)
class Entry:
    """A key's value and revision as read (both None when the key is absent or deleted)."""

    value: bytes | None = None
    revision: int | None = None


async def read(kv: Any, key: str) -> Entry:
    """The entry at ``key`` (an empty Entry when absent or deleted)."""
    from nats.js.errors import KeyDeletedError, KeyNotFoundError

    try:
        entry = await kv.get(key)
    except (KeyNotFoundError, KeyDeletedError):
        return Entry()
    return Entry(entry.value, entry.revision)


async def write(kv: Any, key: str, value: bytes, revision: int | None) -> bool:
    """Write ``value`` if the key is still at ``revision`` (None: still absent)."""
    return await write_at(kv, key, value, revision) is not None


@functools.cache  # an import statement per write: 1% of a reservation's CPU
def _wrong_last() -> type[Exception]:
    """nats-py's "another writer came first" (imported lazily)."""
    from nats.js.errors import KeyWrongLastSequenceError

    return KeyWrongLastSequenceError


async def write_at(kv: Any, key: str, value: bytes, revision: int | None) -> int | None:
    """``write``, answering the key's new revision (None: another writer came first)."""
    try:
        if revision is None:
            return int(await kv.create(key, value))
        return int(await kv.update(key, value, last=revision))
    except _wrong_last():
        return None


async def claim(kv: Any, key: str) -> bytes | None:
    """Delete ``key`` if present and return the value deleted; None if absent, or if another
    claimer deleted or changed it first (exactly one claimer gets the value)."""
    from nats.js.errors import KeyWrongLastSequenceError

    entry = await read(kv, key)
    if entry.value is None:
        return None
    try:
        await kv.delete(key, last=entry.revision)
    except KeyWrongLastSequenceError:
        return None
    return entry.value


#: Given the entry read (and what ``alongside`` read with it), the value to write (None:
#: write nothing) and the result to return.
Step = Callable[[Entry, Any], Awaitable[tuple[bytes | None, R]]]


async def update(
    kv: Any,
    key: str,
    step: Step[R],
    attempts: int = CAS_ATTEMPTS,
    alongside: Callable[[], Awaitable[Any]] | None = None,
    on_conflict: Callable[[], object] | None = None,
    known: tuple[Entry, Any] | None = None,
    stored: Callable[[Entry], None] | None = None,
) -> R:
    """Read ``key`` (and ``alongside()``, concurrently: what ``step`` decides by besides the
    entry), let ``step`` decide, write by compare-and-set; again if someone else wrote
    first, calling ``on_conflict`` (a metric) for each lost write after a read. Raises
    Contention after ``attempts`` lost writes.

    ``known``: the entry and the ``alongside`` result the caller holds already (a watch's
    copy): the first attempt decides by them without reading; a stale copy only costs the
    lost write. Deciding to write nothing is not checked by the server, so that decision
    is made again on what a read finds (a stale copy must not refuse what KV allows).
    ``stored`` is told the entry written (value and new revision)."""
    # A guess costs no attempt of the caller's.
    for attempt in range(attempts + (known is not None)):
        guessed = known is not None
        if known is not None:
            (entry, other), known = known, None
        elif alongside is None:
            entry, other = await read(kv, key), None
        else:
            entry, other = await asyncio.gather(read(kv, key), alongside())
        value, result = await step(entry, other)
        if value is None:
            if guessed:
                continue
            return result
        revision = await write_at(kv, key, value, entry.revision)
        if revision is not None:
            if stored is not None:
                stored(Entry(value, revision))
            return result
        if on_conflict is not None and not guessed:  # a stale copy is no contention
            on_conflict()
        # Lost to another writer: a random pause, growing, so that racers spread out
        # instead of all reading and losing again together.
        await asyncio.sleep(random.uniform(0, min(0.001 * 2**attempt, 0.05)))
    raise Contention(key)
