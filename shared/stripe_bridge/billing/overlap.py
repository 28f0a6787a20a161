"""Round trips overlapped, a bounded number at a time, none abandoned half-way.

The usage counter applies a fetched batch as a few hundred independent KV round trips (a
claim per record, a compare-and-set per count key); waiting for each in turn made the
network's latency, not the CPU, its ceiling. ``each`` runs them ``limit`` at a time.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")


async def each(items: Sequence[T], work: Callable[[T], Awaitable[R]], limit: int) -> list[R]:
    """``work(item)`` for every item, at most ``limit`` at a time; the results in order.

    After a failure no further item starts, but every one started runs to its end (a write
    sent is never cancelled half-way, so what it did is known and counted), then the first
    failure is raised.
    """
    results: dict[int, R] = {}
    failures: list[BaseException] = []
    todo = iter(enumerate(items))

    async def worker() -> None:
        for index, item in todo:  # shared: each item is taken by exactly one worker
            if failures:
                return
            try:
                results[index] = await work(item)
            except Exception as exc:
                failures.append(exc)
                return

    await asyncio.gather(*(worker() for _ in range(min(limit, len(items)))))
    if failures:
        raise failures[0]
    return [results[i] for i in range(len(items))]
