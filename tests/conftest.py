"""Fixtures that start real servers (nats-server, redis-server, bridge functions) on loopback."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from stripe_bridge.ops.natsserver import NatsServer
from stripe_bridge.ops.stream import StreamSpec, provision
from stripe_bridge_testing.natscluster import LocalNatsCluster
from stripe_bridge_testing.processes import (
    FunctionProcess,
    ManagedProcess,
    PushgatewayServer,
    RedisServer,
)
from stripe_bridge_testing.s3_standin import S3StandIn
from stripe_bridge_testing.standin import HttpStandIn

from .helpers import REPO_ROOT, SECRET


def provision_stream(url: str, **spec: object) -> None:
    """Create the bridge's STRIPE stream on the server at ``url``."""
    import nats

    async def go() -> None:
        nc = await nats.connect(url)
        try:
            await provision(nc.jetstream(), StreamSpec("STRIPE", "stripe", **spec))  # type: ignore[arg-type]
        finally:
            await nc.close()

    asyncio.run(go())


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[NatsServer]:
    """A JetStream nats-server with file storage in a temporary folder."""
    with NatsServer(tmp_path / "nats") as server:
        yield server


@pytest.fixture
def stream(nats_server: NatsServer) -> NatsServer:
    """``nats_server`` with the STRIPE stream provisioned."""
    provision_stream(nats_server.url)
    return nats_server


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server without persistence."""
    with RedisServer(tmp_path / "redis") as server:
        yield server


@pytest.fixture
def pushgateway(tmp_path: Path) -> Iterator[PushgatewayServer]:
    """A Pushgateway (Debian's prometheus-pushgateway) with its admin API, on loopback."""
    with PushgatewayServer(tmp_path / "pushgateway") as server:
        yield server


FunctionFactory = Callable[..., FunctionProcess]


def function_process(function_name: str, workdir: Path, **env: str) -> FunctionProcess:
    """A started ``stripe-bridge serve`` process of ``functions/<function_name>``."""
    base = {"STRIPE_WEBHOOK_SECRET": SECRET, "LOG_LEVEL": "INFO"}
    return FunctionProcess(function_name, {**base, **env}, workdir, REPO_ROOT).start()


@pytest.fixture
def start_function(tmp_path: Path) -> Iterator[FunctionFactory]:
    """Start bridge functions as separate processes; all are stopped at teardown."""
    started: list[FunctionProcess] = []

    def start(function_name: str = "stripe_event", **env: str) -> FunctionProcess:
        # A process that fails to start stops itself (ManagedProcess._wait_ready).
        process = function_process(function_name, tmp_path / "functions", **env)
        started.append(process)
        return process

    try:
        yield start
    finally:
        for process in started:
            process.stop()


#: What starts a server; a test reaching one (itself, through its module or a fixture) is
#: marked ``servers``, and ``scripts/check`` runs only the others (``-m "not servers"``).
SERVER_TYPES: tuple[type, ...] = (
    NatsServer,
    LocalNatsCluster,
    ManagedProcess,
    HttpStandIn,
    S3StandIn,
)


def _starts_servers(namespace: dict[str, object]) -> bool:
    return any(
        isinstance(value, type) and issubclass(value, SERVER_TYPES) for value in namespace.values()
    )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test that may start a server (see SERVER_TYPES) as ``servers``."""
    for item in items:
        module = getattr(item, "module", None)
        fixtures = getattr(item, "_fixtureinfo", None)
        namespaces = [vars(module)] if module is not None else []
        if fixtures is not None:
            for definitions in fixtures.name2fixturedefs.values():
                for definition in definitions:
                    namespaces.append(vars(sys.modules[definition.func.__module__]))
        if any(_starts_servers(namespace) for namespace in namespaces):
            item.add_marker(pytest.mark.servers)
