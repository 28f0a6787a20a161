"""A circuit breaker for the OpenMeter forwarder: stop hammering a service that is down.

closed --(``failure_threshold`` failures in a row)--> open --(``reset_timeout`` s)-->
half-open --(one trial succeeds)--> closed, or --(it fails)--> open again.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from enum import IntEnum


class BreakerState(IntEnum):
    """Breaker states; the values are what the ``breaker_state`` gauge shows."""

    CLOSED = 0
    HALF_OPEN = 1
    OPEN = 2


class CircuitBreaker:
    """Counts consecutive failures; callers ask ``wait_seconds`` before each attempt."""

    def __init__(
        self,
        failure_threshold: int = 5,
        reset_timeout: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
        on_change: Callable[[BreakerState], None] | None = None,
    ) -> None:
        if failure_threshold < 1 or reset_timeout <= 0:
            raise ValueError("failure_threshold >= 1 and reset_timeout > 0 required")
        self.failure_threshold = failure_threshold
        self.reset_timeout = reset_timeout
        self._clock = clock
        self._on_change = on_change or (lambda _state: None)
        self._state = BreakerState.CLOSED
        self._failures = 0
        self._opened_at = 0.0

    def _set(self, state: BreakerState) -> None:
        if state is not self._state:
            self._state = state
            self._on_change(state)

    @property
    def state(self) -> BreakerState:
        """The current state; an open breaker whose timeout passed reports half-open."""
        if (
            self._state is BreakerState.OPEN
            and self._clock() - self._opened_at >= self.reset_timeout
        ):
            self._set(BreakerState.HALF_OPEN)
        return self._state

    def wait_seconds(self) -> float:
        """0 when a request may go now, else how long until the half-open trial."""
        if self.state is BreakerState.OPEN:
            return max(0.0, self._opened_at + self.reset_timeout - self._clock())
        return 0.0

    def record_success(self) -> None:
        """The service answered usefully: close the breaker."""
        self._failures = 0
        self._set(BreakerState.CLOSED)

    def record_failure(self) -> None:
        """The service failed; open after enough in a row, or at once when half-open."""
        self._failures += 1
        if self.state is BreakerState.HALF_OPEN or self._failures >= self.failure_threshold:
            self._opened_at = self._clock()
            self._set(BreakerState.OPEN)
