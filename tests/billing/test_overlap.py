"""``overlap.each``: at most ``limit`` at a time, results in order, and after a failure
nothing new starts while everything started finishes (the counter counts what it wrote)."""

from __future__ import annotations

import asyncio

import pytest
from stripe_bridge.billing import overlap


async def test_at_most_limit_run_at_once_and_results_keep_their_order() -> None:
    running: list[int] = []
    most = 0
    release = asyncio.Event()

    async def work(n: int) -> int:
        nonlocal most
        running.append(n)
        most = max(most, len(running))
        if len(running) == 4:
            release.set()  # every worker is busy: let them all go on
        await release.wait()
        running.remove(n)
        return n * n

    # Fewer than 4 at once would never set ``release``: bounded by a generous deadline.
    results = await asyncio.wait_for(overlap.each(list(range(10)), work, 4), 30)
    assert results == [n * n for n in range(10)]
    assert most == 4


async def test_a_failure_stops_new_work_but_lets_started_work_finish() -> None:
    started: list[int] = []
    finished: list[int] = []
    failed = asyncio.Event()

    async def work(n: int) -> int:
        started.append(n)
        if n == 1:
            failed.set()
            raise ValueError("lost")
        if n == 0:
            await failed.wait()  # still in flight when item 1 fails
        finished.append(n)
        return n

    with pytest.raises(ValueError, match="lost"):
        await overlap.each(list(range(10)), work, 2)
    assert sorted(started) == [0, 1] and finished == [0]
