"""Fixtures of the NATS cluster tests: a real 3-node JetStream cluster on loopback."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from stripe_bridge.inbox import inbox_prefix
from stripe_bridge.streams import StreamSpec, provision
from stripe_bridge_testing.natscluster import LocalNatsCluster
from stripe_bridge_testing.waiting import wait_until_async

STREAM = "STRIPE"
#: JetStream API timeout of the admin's setup and inspection (not what a test is about):
#: creating an R3 stream took over nats-py's default 5 s beside a CPU hog.
ADMIN_TIMEOUT = 30.0
#: How long a new R3 stream or consumer may take to elect a leader and catch its replicas up.
SETTLE_TIMEOUT = 60.0


async def connect(cluster: LocalNatsCluster, user: str = "admin", **options: Any) -> Any:
    """A nats-py connection to every node of ``cluster`` as ``user``."""
    import nats

    async def quiet(_exc: Exception) -> None:
        # Nodes are stopped on purpose here; nats-py would print a traceback per attempt.
        return None

    options.setdefault("error_cb", quiet)
    # nats.conf lets each user subscribe only to its own inbox, as connect_options sets it.
    options.setdefault("inbox_prefix", inbox_prefix(user))
    options.setdefault("max_reconnect_attempts", 5)
    options.setdefault("reconnect_time_wait", 0.2)
    return await nats.connect(
        servers=cluster.servers(), user=user, password=cluster.passwords[user], **options
    )


async def settled(js: Any, stream: str, consumer: str | None = None) -> None:
    """Wait until ``stream`` (or its ``consumer``) has a leader and every replica is current.

    Right after an R3 stream or consumer is created its Raft group may still be electing:
    beside a CPU hog the first pull then got a 503 (no responders). Tests that are about
    permissions, not elections, start once the group has settled; the consumers' own pull
    loops retry a 503 (stripe_consumer, usage_counter, openmeter).
    """
    from nats.js.errors import Error as JetStreamError

    async def ready() -> bool:
        try:
            if consumer is None:
                info = await js.stream_info(stream)
            else:
                info = await js.consumer_info(stream, consumer)
        except (TimeoutError, JetStreamError):
            return False
        group = info.cluster
        return bool(
            group
            and group.leader
            and all(peer.current and not peer.offline for peer in group.replicas or [])
        )

    what = f"{stream}{'/' + consumer if consumer else ''} with a leader and current replicas"
    await wait_until_async(ready, SETTLE_TIMEOUT, what)


def provision_r3(cluster: LocalNatsCluster) -> None:
    """Create the bridge's stream with 3 replicas (as the admin user), settled."""

    async def go() -> None:
        nc = await connect(cluster)
        try:
            js = nc.jetstream(timeout=ADMIN_TIMEOUT)
            await provision(js, StreamSpec(STREAM, "stripe", replicas=3))
            await settled(js, STREAM)
        finally:
            await nc.close()

    asyncio.run(go())


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[LocalNatsCluster]:
    """Three clustered nats-servers rendered from the shared nats.conf template, R3 stream."""
    nodes = LocalNatsCluster(tmp_path / "cluster")
    try:
        nodes.start()
        provision_r3(nodes)
        yield nodes
    finally:
        nodes.stop()
