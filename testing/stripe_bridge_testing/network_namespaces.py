"""Network namespaces a test makes for itself: one per NATS node, plus a hub for clients.

Each node's namespace has one veth whose other end is on a bridge in the hub namespace;
the test thread, and every process and thread it starts while inside ``entered``, live in
the hub, so functions and test clients reach the nodes as pods reach NATS. Addresses are
only ever assigned inside these namespaces (never in the machine's own), and everything is
deleted at the end. ``cut``/``heal`` blackhole the routes between one node and its peers
while the node keeps running and keeps its clients: a partition, not a crash.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import secrets
import subprocess
from collections.abc import Iterator

_CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=10)


def _setns(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        if _libc.setns(fd, _CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), f"setns {path}")
    finally:
        os.close(fd)


class NodeNetworks:
    """``size`` node namespaces on one bridge; node ``i`` has address ``hosts[i]``."""

    def __init__(self, size: int) -> None:
        tag = secrets.token_hex(3)
        self.hub = f"sbhub-{tag}"
        self.nodes = [f"sbn{i}-{tag}" for i in range(size)]
        # 10.213.0.0/24 exists only inside these namespaces.
        self.hosts = [f"10.213.0.{i + 1}" for i in range(size)]
        self.hub_host = "10.213.0.254"

    def create(self) -> NodeNetworks:
        """Make the namespaces, the bridge and the veths; everything up."""
        try:
            _ip("netns", "add", self.hub)
            _ip("-n", self.hub, "link", "set", "lo", "up")
            _ip("-n", self.hub, "link", "add", "br0", "type", "bridge")
            _ip("-n", self.hub, "addr", "add", f"{self.hub_host}/24", "dev", "br0")
            _ip("-n", self.hub, "link", "set", "br0", "up")
            for index, (name, host) in enumerate(zip(self.nodes, self.hosts, strict=True)):
                _ip("netns", "add", name)
                _ip("-n", name, "link", "set", "lo", "up")
                # Both ends are created inside the node's namespace, then one moves to the hub.
                _ip("-n", name, "link", "add", "eth0", "type", "veth", "peer", f"p{index}")
                _ip("-n", name, "link", "set", f"p{index}", "netns", self.hub)
                _ip("-n", self.hub, "link", "set", f"p{index}", "master", "br0", "up")
                _ip("-n", name, "addr", "add", f"{host}/24", "dev", "eth0")
                _ip("-n", name, "link", "set", "eth0", "up")
        except BaseException:
            self.delete()
            raise
        return self

    def launcher(self, index: int) -> list[str]:
        """The command prefix that runs a program in node ``index``'s namespace."""
        return ["ip", "netns", "exec", self.nodes[index]]

    def _routes(self, index: int, action: str) -> None:
        for other, host in enumerate(self.hosts):
            if other != index:
                _ip("-n", self.nodes[index], "route", action, "blackhole", f"{host}/32")
                _ip(
                    "-n", self.nodes[other], "route", action, "blackhole", f"{self.hosts[index]}/32"
                )

    def cut(self, index: int) -> None:
        """Node ``index`` and its peers can no longer reach each other (clients still can)."""
        self._routes(index, "add")

    def heal(self, index: int) -> None:
        """Undo ``cut``."""
        self._routes(index, "del")

    @contextlib.contextmanager
    def entered(self) -> Iterator[None]:
        """The calling thread in the hub namespace (threads and processes it starts too)."""
        own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
        try:
            _setns(f"/run/netns/{self.hub}")
            try:
                yield
            finally:
                if _libc.setns(own, _CLONE_NEWNET) != 0:
                    raise OSError(ctypes.get_errno(), "setns back")
        finally:
            os.close(own)

    def delete(self) -> None:
        """Remove every namespace this made (their veths and the bridge go with them)."""
        for name in [*self.nodes, self.hub]:
            subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=10)
