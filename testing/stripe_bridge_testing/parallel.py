"""What keeps pytest-xdist workers apart: ports from a slice each, tests grouped by module.

Each worker is a process of its own, so ``free_port``'s memory of the ports it handed out
does not reach the others; without slices two workers could start servers on one port.
Tests sharing a module (or a declared folder) run on one worker, so module-, package- and
session-scoped servers start once and a folder's tests never race each other.
"""

from __future__ import annotations

from collections.abc import Collection

import pytest
from stripe_bridge.ops.natsserver import PORT_RANGE
from xdist.remote import Producer
from xdist.scheduler import LoadFileScheduling


def worker_ports(worker: str, count: int) -> str:
    """The ``LOW-HIGH`` slice of the test port range for xdist worker ``worker`` (gw0, ...)."""
    index = int(worker.removeprefix("gw"))
    if not 0 <= index < count:
        raise ValueError(f"worker {worker} out of {count}")
    low, high = PORT_RANGE
    size = (high - low) // count
    return f"{low + index * size}-{low + (index + 1) * size}"


class FolderScheduling(LoadFileScheduling):  # type: ignore[misc]  # xdist has no types
    """``--dist loadfile``, with every test under one of ``folders`` in a single unit.

    xdist's own ``loadgroup`` cannot do this with pytest 9.2: it marks a group by
    rewriting the node id, which pytest 9.2 no longer reads (pytest-xdist issue #1386).
    """

    def __init__(self, config: pytest.Config, log: Producer, folders: Collection[str]) -> None:
        super().__init__(config, log)
        self.folders = tuple(folder.rstrip("/") + "/" for folder in folders)

    def _split_scope(self, nodeid: str) -> str:
        module = super()._split_scope(nodeid)
        return next((folder for folder in self.folders if module.startswith(folder)), module)
