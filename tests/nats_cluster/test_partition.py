"""A network partition of one NATS node (it keeps running), under traffic, then healed.

Every node runs in a network namespace of its own (stripe_bridge_testing.network_namespaces);
the cut blackholes the routes between the stream leader and its peers while the leader keeps
its clients. One function publishes through the cut-off node only, another through the other
two. Answers must stay truthful (200 only with a stored copy; a 503 that says why, never
``no_stream`` for a stream that exists), and after healing every event is stored exactly
once on every replica.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from stripe_bridge_testing.natscluster import LocalNatsCluster
from stripe_bridge_testing.network_namespaces import NodeNetworks
from stripe_bridge_testing.processes import FunctionProcess
from stripe_bridge_testing.waiting import wait_until

from ..conftest import FunctionFactory
from .conftest import provision_r3
from .test_failover import (
    SteadyTraffic,
    redeliver_until_stored,
    replicas_converged,
    stored_ids,
    stream_leader,
)


@pytest.fixture
def networks() -> Iterator[NodeNetworks]:
    nets = NodeNetworks(3).create()
    try:
        with nets.entered():
            yield nets
    finally:
        nets.delete()


@pytest.fixture
def isolated_cluster(networks: NodeNetworks, tmp_path: Path) -> Iterator[LocalNatsCluster]:
    launchers = [networks.launcher(i) for i in range(3)]
    cluster = LocalNatsCluster(tmp_path / "cluster", hosts=networks.hosts, launchers=launchers)
    try:
        cluster.start()
        provision_r3(cluster)
        yield cluster
    finally:
        cluster.stop()


def publisher(
    cluster: LocalNatsCluster, start_function: FunctionFactory, nodes: list[int]
) -> FunctionProcess:
    return start_function(
        NATS_URL=cluster.url(user=None, nodes=nodes),
        NATS_USER="publisher",
        NATS_PASSWORD=cluster.passwords["publisher"],
        PUBLISH_TIMEOUT="2",
    )


async def test_partitioned_stream_leader_loses_nothing_and_answers_truthfully(
    networks: NodeNetworks, isolated_cluster: LocalNatsCluster, start_function: FunctionFactory
) -> None:
    cluster = isolated_cluster
    cut = await stream_leader(cluster)
    rest = [i for i in range(3) if i != cut]
    minority = publisher(cluster, start_function, [cut])
    majority = publisher(cluster, start_function, rest)
    small, big = SteadyTraffic(minority.url, workers=2), SteadyTraffic(majority.url, workers=2)
    with small, big:
        wait_until(lambda: small.stored_since(0) >= 20 and big.stored_since(0) >= 20, 60, "20")
        small_at, big_at = small.answered(), big.answered()
        networks.cut(cut)
        # The majority elects a new leader and stores again; the cut-off node, still
        # running, first times out, then (leader no more) has no one to answer.
        wait_until(lambda: big.stored_since(big_at) >= 20, 60, "majority stores again")
        wait_until(
            lambda: any(r not in ("", "puback_timeout") for _e, _s, r in small.since(small_at)),
            60,
            "the cut-off node to stop leading",
        )
        assert small.stored_since(small_at + 4) == 0  # nothing stored across the cut
        healed_at = small.answered()
        networks.heal(cut)
        wait_until(lambda: small.stored_since(healed_at) >= 20, 90, "cut-off side stores again")
    answers = small.since(0) + big.since(0)
    assert {status for _e, status, _r in answers} <= {200, 503}
    reasons = Counter(reason for _e, status, reason in answers if status == 503)
    assert set(reasons) <= {"puback_timeout", "stream_unavailable", "nats_unavailable"}, reasons
    assert reasons["stream_unavailable"] >= 1
    for event, status, _reason in answers:
        if status == 503:
            redeliver_until_stored(majority.url, event)
    events = [event for event, _s, _r in answers]
    assert await stored_ids(cluster) == Counter(event["id"] for event in events)
    wait_until(lambda: replicas_converged(cluster, len(events)), 60, "every replica has all")
