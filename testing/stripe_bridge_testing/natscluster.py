"""A real JetStream cluster of nats-server processes on loopback, from the shared nats.conf.

Used by the cluster tests and ``bench/bench_cluster.py``. Every node renders
``templates/nats.conf.tmpl`` (the same template as the Kubernetes ConfigMap) with its own
ports and folder; passwords are random per cluster and reach the servers through the
environment, as the Secrets do in the pods.
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.error import URLError

from stripe_bridge.deploy.natsconf import (
    CLIENT_PORT,
    CLUSTER_PORT,
    MONITOR_PORT,
    PASSWORD_ENV,
    NatsConfParams,
    new_password,
    render_nats_conf,
)
from stripe_bridge.ops.natsserver import NatsServer, free_port

from .waiting import wait_until


class LocalNatsCluster:
    """``size`` clustered nats-servers on 127.0.0.1, each with file storage in ``workdir``."""

    def __init__(
        self,
        workdir: Path,
        size: int = 3,
        max_file_store: str = "256M",
        hosts: Sequence[str] | None = None,
        launchers: Sequence[Sequence[str]] | None = None,
    ) -> None:
        """``hosts``/``launchers``: one address and command prefix per node, for nodes in
        network namespaces of their own (each then has the standard ports); else loopback.
        """
        self.workdir = workdir
        self.passwords = {user: new_password() for user in PASSWORD_ENV}
        env = {PASSWORD_ENV[user]: password for user, password in self.passwords.items()}
        if hosts is None:
            hosts = ["127.0.0.1"] * size
            cluster_ports = [free_port() for _ in range(size)]
        else:
            cluster_ports = [CLUSTER_PORT] * size
        routes = tuple(
            f"nats://{host}:{port}" for host, port in zip(hosts, cluster_ports, strict=True)
        )
        self.nodes: list[NatsServer] = []
        for index, cluster_port in enumerate(cluster_ports):
            folder = workdir / f"n{index}"
            folder.mkdir(parents=True, exist_ok=True)
            own_namespace = hosts[index] != "127.0.0.1"
            server = NatsServer(
                folder / "jetstream",
                port=CLIENT_PORT if own_namespace else None,
                monitor_port=MONITOR_PORT if own_namespace else None,
                host=hosts[index],
                config_file=folder / "nats.conf",
                log_file=folder / "nats-server.log",
                env=env,
                launcher=launchers[index] if launchers else (),
            )
            params = NatsConfParams(
                server_name=f"n{index}",
                host=server.host,
                client_port=server.port,
                cluster_port=cluster_port,
                monitor_port=server.monitor_port,
                routes=routes,
                store_dir=str(server.store_dir),
                pid_file=str(self.pid_file(index)),
                max_file_store=max_file_store,
                # Short: tests wait for a lame-duck server to hand its clients over.
                lame_duck_grace_period="1s",
            )
            (folder / "nats.conf").write_text(render_nats_conf(params))
            self.nodes.append(server)

    def url(self, user: str | None = "admin", nodes: list[int] | None = None) -> str:
        """Comma-separated client URLs of ``nodes`` (default all), with ``user``'s password."""
        auth = f"{user}:{self.passwords[user]}@" if user else ""
        chosen = range(len(self.nodes)) if nodes is None else nodes
        return ",".join(f"nats://{auth}{self.nodes[i].host}:{self.nodes[i].port}" for i in chosen)

    def servers(self) -> list[str]:
        """Client URLs without credentials, for nats-py ``servers=`` with ``user=``."""
        return [node.url for node in self.nodes]

    def index_of(self, server_name: str) -> int:
        """The node index of the server called ``server_name`` (``n<index>``)."""
        return int(server_name.removeprefix("n"))

    def start(self, timeout: float = 30.0) -> LocalNatsCluster:
        """Start every node, then wait until each reports a healthy JetStream meta layer."""
        for node in self.nodes:
            node.start(timeout)
        self.wait_healthy(timeout)
        return self

    def start_node(self, index: int, timeout: float = 30.0) -> None:
        """(Re)start one node with its existing storage."""
        self.nodes[index].start(timeout)

    def stop_node(self, index: int) -> None:
        """Stop one node (SIGTERM, as Kubernetes does when a pod is deleted)."""
        self.nodes[index].stop()

    def pid_file(self, index: int) -> Path:
        """Where node ``index`` writes its pid (what the preStop hook signals)."""
        return self.workdir / f"n{index}" / "nats.pid"

    def kill_node(self, index: int) -> None:
        """SIGKILL one node: a crash, no chance to flush or step down."""
        process = self.nodes[index].process
        if process is not None and process.poll() is None:
            process.kill()
            process.wait(10)

    def running(self) -> list[int]:
        """Indexes of nodes whose process is alive."""
        return [
            i for i, node in enumerate(self.nodes) if node.process and node.process.poll() is None
        ]

    def healthz(self, index: int) -> bool:
        """Full ``/healthz`` (JetStream meta current, streams caught up) of one node."""
        node = self.nodes[index]
        try:
            url = f"http://{node.host}:{node.monitor_port}/healthz"
            with urllib.request.urlopen(url, timeout=1.0) as response:
                return bool(response.status == 200)
        except (URLError, OSError):
            return False

    def wait_healthy(self, timeout: float = 30.0) -> None:
        """Wait until every running node's full health check passes."""
        wait_until(
            lambda: all(self.healthz(i) for i in self.running()), timeout, "nats cluster health"
        )

    def jsz(self, index: int) -> dict[str, Any]:
        """``/jsz`` with account and stream details, as one node sees them."""
        node = self.nodes[index]
        url = f"http://{node.host}:{node.monitor_port}/jsz?accounts=true&streams=true"
        with urllib.request.urlopen(url, timeout=2.0) as response:
            result: dict[str, Any] = json.loads(response.read())
            return result

    def local_stream_state(self, index: int, stream: str) -> dict[str, Any] | None:
        """The state of ``stream``'s replica stored on node ``index`` (None: no replica)."""
        for account in self.jsz(index).get("account_details") or []:
            for detail in account.get("stream_detail") or []:
                if detail.get("name") == stream:
                    state: dict[str, Any] = detail["state"]
                    return state
        return None

    def stop(self) -> None:
        """Stop every node."""
        for node in self.nodes:
            node.stop()

    def __enter__(self) -> LocalNatsCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
