"""breaker.py: the circuit breaker, closed, open and half-open, on a hand-moved clock."""

from __future__ import annotations

import pytest
from stripe_bridge.billing.breaker import BreakerState, CircuitBreaker


class Clock:
    """A hand-moved clock."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_breaker_opens_half_opens_and_closes() -> None:
    clock = Clock()
    seen: list[BreakerState] = []
    breaker = CircuitBreaker(2, reset_timeout=10, clock=clock, on_change=seen.append)
    breaker.record_failure()
    assert breaker.state is BreakerState.CLOSED and breaker.wait_seconds() == 0
    breaker.record_failure()
    # mypy narrowed ``state`` to CLOSED above; the property changes with every call.
    assert breaker.state is BreakerState.OPEN  # type: ignore[comparison-overlap]
    clock.now += 4
    assert breaker.wait_seconds() == 6
    clock.now += 6
    assert breaker.state is BreakerState.HALF_OPEN and breaker.wait_seconds() == 0
    breaker.record_failure()  # the trial failed: open again at once, for a full timeout
    assert breaker.state is BreakerState.OPEN and breaker.wait_seconds() == 10
    clock.now += 10
    assert breaker.wait_seconds() == 0  # callers ask before each attempt: half-open trial
    breaker.record_success()
    assert breaker.state is BreakerState.CLOSED
    assert seen == [
        BreakerState.OPEN, BreakerState.HALF_OPEN, BreakerState.OPEN,
        BreakerState.HALF_OPEN, BreakerState.CLOSED,
    ]  # fmt: skip


def test_breaker_rejects_nonsense() -> None:
    with pytest.raises(ValueError):
        CircuitBreaker(failure_threshold=0)
