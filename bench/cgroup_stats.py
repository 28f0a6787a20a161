"""CPU time and resident memory of one container, from its cgroup's files.

Reading two files costs microseconds, where ``podman stats`` starts a process that takes
a noticeable share of a core on a 2-core machine each time it samples. Both cgroup
versions: v1 (``cpuacct.usage`` in ns, ``memory.stat`` ``total_rss``) and v2
(``cpu.stat`` ``usage_usec``, ``memory.stat`` ``anon``). The path is what
``podman inspect --format '{{.State.CgroupPath}}'`` prints.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

ROOT = Path("/sys/fs/cgroup")


def _stat(path: Path, key: str) -> int:
    for line in path.read_text().splitlines():
        name, _, value = line.partition(" ")
        if name == key:
            return int(value)
    raise KeyError(f"{key} not in {path}")


@dataclass(frozen=True)
class Cgroup:
    """One container's cgroup."""

    path: str  # relative to the cgroup root, e.g. /libpod_parent/libpod-<id>

    @property
    def v2(self) -> bool:
        """Whether this machine mounts the unified hierarchy at the root."""
        return (ROOT / "cgroup.controllers").exists()

    def cpu_seconds(self) -> float:
        """CPU time (user + system) of every process in it so far."""
        relative = self.path.lstrip("/")
        if self.v2:
            return _stat(ROOT / relative / "cpu.stat", "usage_usec") / 1e6
        return int((ROOT / "cpuacct" / relative / "cpuacct.usage").read_text()) / 1e9

    def rss_bytes(self) -> int:
        """Anonymous resident memory (what ``ps`` calls RSS, without the page cache)."""
        relative = self.path.lstrip("/")
        if self.v2:
            return _stat(ROOT / relative / "memory.stat", "anon")
        return _stat(ROOT / "memory" / relative / "memory.stat", "total_rss")
