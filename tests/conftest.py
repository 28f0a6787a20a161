"""Fixtures that start real servers (nats-server, redis-server, bridge functions) on loopback."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from stripe_bridge.ops.natsserver import PORTS_ENV, NatsServer
from stripe_bridge.streams import StreamSpec, provision
from stripe_bridge_testing.deliveries import SECRET
from stripe_bridge_testing.parallel import FolderScheduling, worker_ports
from stripe_bridge_testing.processes import FunctionProcess, PushgatewayServer, RedisServer
from stripe_bridge_testing.repo import REPO_ROOT
from xdist.remote import Producer

#: Folders whose tests run on one xdist worker, and why; every other module is a unit of
#: its own (``--dist loadfile``, as scripts/test runs), so its module-scoped servers start once.
#: (The two container modules run side by side: the second worker waits for the first's
#: image build and reuses it, see ``stripe_bridge_testing.podman.scripts_image``.)
SHARED_WORKER = {
    "tests/consumers": "the package-scoped `published` stream is filled once",
}
#: The longest modules (``--durations`` of a whole run, docs/testing.md "Time"): their
#: workers start them first, so none of them is left running alone at the end.
START_FIRST = (
    "tests/containers/",
    "tests/nats_cluster/test_partition.py",
    "tests/nats_cluster/test_rolling_restart.py",
    "tests/coldstart/test_bench_runs.py",
    "tests/bridge/test_cli.py",
    "tests/bridge/test_faults.py",
    "tests/nats_cluster/test_failover.py",
    "tests/observability/test_rules.py",
    "tests/observability/test_billing_dashboard.py",
)


def pytest_configure(config: pytest.Config) -> None:
    """On an xdist worker, hand out ports only from the worker's own slice."""
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    if worker is not None:
        count = int(os.environ["PYTEST_XDIST_WORKER_COUNT"])
        os.environ[PORTS_ENV] = worker_ports(worker, count)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Put the START_FIRST modules first (a stable sort: the rest keep their order)."""

    def rank(item: pytest.Item) -> int:
        module = item.nodeid.split("::", 1)[0]
        starts = [i for i, prefix in enumerate(START_FIRST) if module.startswith(prefix)]
        return starts[0] if starts else len(START_FIRST)

    items.sort(key=rank)


def pytest_xdist_make_scheduler(config: pytest.Config, log: Producer) -> FolderScheduling | None:
    """``--dist loadfile`` keeps each SHARED_WORKER folder on one worker."""
    if config.getvalue("dist") != "loadfile":
        return None
    return FolderScheduling(config, log, SHARED_WORKER)


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


@pytest.fixture
def lost_writes(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Keys whose compare-and-set write nats-server refused, in order: the real
    ``cas.write_at`` (which ``cas.write`` and ``cas.update`` call), watched, so that a test
    of racing writers can show they raced."""
    from stripe_bridge_entitlements import cas

    write_at = cas.write_at
    lost: list[str] = []

    async def watched(kv: Any, key: str, value: bytes, revision: int | None) -> int | None:
        written = await write_at(kv, key, value, revision)
        if written is None:
            lost.append(key)
        return written

    monkeypatch.setattr(cas, "write_at", watched)
    return lost


#: ``write_between(other)``: see the fixture.
WriteBetween = Callable[[Callable[[Any], Awaitable[object]]], None]


@pytest.fixture
def write_between(monkeypatch: pytest.MonkeyPatch) -> WriteBetween:
    """A race that happens every time: ``write_between(other)`` runs ``other(kv)``, another
    writer, to the end between the next compare-and-set's read and its write (two
    concurrent tasks would race in an order the event loop picks, or not at all)."""
    from stripe_bridge_entitlements import cas

    def arrange(other: Callable[[Any], Awaitable[object]]) -> None:
        write_at = cas.write_at
        pending = [other]

        async def other_writer_first(
            kv: Any, key: str, value: bytes, revision: int | None
        ) -> int | None:
            if pending:
                await pending.pop()(kv)
            return await write_at(kv, key, value, revision)

        monkeypatch.setattr(cas, "write_at", other_writer_first)

    return arrange


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
