"""What keeps pytest-xdist workers apart: each hands out ports from a slice of its own.

Each worker is a process of its own, so ``free_port``'s memory of the ports it handed out
does not reach the others; without slices two workers could start servers on one port.
"""

from __future__ import annotations

from stripe_bridge.natsserver import PORT_RANGE


def worker_ports(worker: str, count: int) -> str:
    """The ``LOW-HIGH`` slice of the test port range for xdist worker ``worker`` (gw0, ...)."""
    index = int(worker.removeprefix("gw"))
    if not 0 <= index < count:
        raise ValueError(f"worker {worker} out of {count}")
    low, high = PORT_RANGE
    size = (high - low) // count
    return f"{low + index * size}-{low + (index + 1) * size}"
