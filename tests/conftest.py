"""Fixtures that start real servers (nats-server, redis-server, bridge functions) on loopback."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from stripe_bridge.natsserver import PORTS_ENV, NatsServer
from stripe_bridge.stream import StreamSpec, provision
from stripe_bridge_testing.parallel import worker_ports
from stripe_bridge_testing.processes import FunctionProcess, PushgatewayServer, RedisServer

from .helpers import REPO_ROOT, SECRET

#: Folders whose tests run on one xdist worker (``--dist loadgroup``), and why; every other
#: module is a group of its own, so its module-scoped servers start once.
SHARED_WORKER = {
    "tests/containers": "the session builds the image once; two builds must not race",
    "tests/consumers": "the package-scoped `published` stream is filled once",
}


def pytest_configure(config: pytest.Config) -> None:
    """On an xdist worker, hand out ports only from the worker's own slice."""
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    if worker is not None:
        count = int(os.environ["PYTEST_XDIST_WORKER_COUNT"])
        os.environ[PORTS_ENV] = worker_ports(worker, count)


@pytest.hookimpl(tryfirst=True)  # before xdist reads the groups into the node ids
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Group each test by its module, or by its SHARED_WORKER folder, for ``loadgroup``."""
    for item in items:
        module = item.path.relative_to(config.rootpath).as_posix()
        shared = [folder for folder in SHARED_WORKER if module.startswith(folder + "/")]
        item.add_marker(pytest.mark.xdist_group(shared[0] if shared else module))


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
