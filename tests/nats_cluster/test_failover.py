"""The bridge loses nothing when cluster nodes die: real function, real 3-node R3 cluster."""

from __future__ import annotations

import asyncio
import json
import subprocess
import threading
import urllib.request
from collections import Counter
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from nats.js.errors import ServiceUnavailableError
from stripe_bridge.deploy.kustomize import build
from stripe_bridge.ops.natsserver import nats_server_binary
from stripe_bridge_testing.deliveries import fixture_event, post_event
from stripe_bridge_testing.natscluster import LocalNatsCluster
from stripe_bridge_testing.processes import FunctionProcess
from stripe_bridge_testing.repo import REPO_ROOT
from stripe_bridge_testing.waiting import wait_until

from ..conftest import FunctionFactory
from .conftest import STREAM, connect
from .test_manifests import by_kind

KINDS = ("invoice_paid", "subscription_updated", "charge_succeeded", "customer_updated")


def bridge(cluster: LocalNatsCluster, start_function: FunctionFactory) -> FunctionProcess:
    """The catch-all function, as the publisher user, knowing every server."""
    return start_function(
        NATS_URL=cluster.url(user=None),
        NATS_USER="publisher",
        NATS_PASSWORD=cluster.passwords["publisher"],
        PUBLISH_TIMEOUT="2",
    )


def fresh_events(count: int) -> list[dict[str, Any]]:
    """``count`` real payloads of several types, each with a new event id."""
    return [fixture_event(KINDS[i % len(KINDS)], fresh_id=True) for i in range(count)]


async def stream_info(cluster: LocalNatsCluster, timeout: float = 30.0) -> Any:
    """Stream info from the current leader, waiting out a leader election."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    nc = await connect(cluster)
    try:
        while True:
            try:
                info = await nc.jetstream(timeout=1).stream_info(STREAM)
                if info.cluster and info.cluster.leader:
                    return info
            except Exception:
                if loop.time() > deadline:
                    raise
            if loop.time() > deadline:
                raise TimeoutError("the stream has no leader")
            await asyncio.sleep(0.1)  # poll interval of the deadline loop, not a sync point
    finally:
        await nc.close()


async def stream_leader(cluster: LocalNatsCluster) -> int:
    """The index of the node leading the stream's Raft group."""
    return cluster.index_of((await stream_info(cluster)).cluster.leader)


async def stored_ids(cluster: LocalNatsCluster, timeout: float = 30.0) -> Counter[str]:
    """How often each Nats-Msg-Id is in the stream (read by sequence from the leader)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        # Right after a node returns, JetStream may answer 503 until the stream has a
        # leader, and for a moment after it has one (seen on a loaded machine): read again.
        state = (await stream_info(cluster)).state
        nc = await connect(cluster)
        try:
            js = nc.jetstream(timeout=5)
            ids: Counter[str] = Counter()
            for seq in range(state.first_seq, state.last_seq + 1 if state.messages else 0):
                ids[(await js.get_msg(STREAM, seq)).headers["Nats-Msg-Id"]] += 1
            return ids
        except ServiceUnavailableError:
            if loop.time() > deadline:
                raise
        finally:
            await nc.close()
        await asyncio.sleep(0.1)  # poll interval of the deadline loop, not a sync point


def redeliver_until_stored(url: str, event: dict[str, Any], timeout: float = 60.0) -> None:
    """Stripe's retry: deliver again until the bridge answers 2xx."""
    wait_until(lambda: post_event(url, event).is_success, timeout, f"redelivery of {event['id']}")


def replicas_converged(cluster: LocalNatsCluster, expected: int) -> bool:
    """Every node's own replica of the stream holds ``expected`` messages, same last seq."""
    states = [cluster.local_stream_state(i, STREAM) for i in range(len(cluster.nodes))]
    if any(state is None or state["messages"] != expected for state in states):
        return False
    return len({state["last_seq"] for state in states if state}) == 1


class SteadyTraffic:
    """Senders delivering fresh events back to back until stopped (at most ``limit``).

    Each answer is kept with its event and, for a refusal, the JSON ``error``.
    """

    def __init__(self, url: str, workers: int = 4, limit: int = 3000) -> None:
        self.url = url
        self.limit = limit
        self._lock = threading.Lock()
        self._answers: list[tuple[dict[str, Any], int, str]] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run) for _ in range(workers)]

    def _run(self) -> None:
        while not self._stop.is_set() and self.answered() < self.limit:
            (event,) = fresh_events(1)
            response = post_event(self.url, event)
            error = "" if response.is_success else str(response.json().get("error"))
            with self._lock:
                self._answers.append((event, response.status_code, error))

    def answered(self) -> int:
        """How many deliveries got an answer so far."""
        with self._lock:
            return len(self._answers)

    def since(self, index: int) -> list[tuple[dict[str, Any], int, str]]:
        """(event, status, error) of the answers after the first ``index``."""
        with self._lock:
            return self._answers[index:]

    def stored_since(self, index: int) -> int:
        """2xx answers after the first ``index`` answers."""
        return sum(status == 200 for _event, status, _error in self.since(index))

    def results(self) -> tuple[list[dict[str, Any]], list[int]]:
        """Every event sent and its answer, in answer order."""
        answers = self.since(0)
        return [e for e, _s, _r in answers], [s for _e, s, _r in answers]

    def __enter__(self) -> SteadyTraffic:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(60)


def send_all(url: str, events: list[dict[str, Any]], workers: int = 4) -> list[Future[int]]:
    """Start delivering ``events`` with ``workers`` concurrent senders; answers as futures."""
    pool = ThreadPoolExecutor(workers)
    futures = [pool.submit(lambda e: post_event(url, e).status_code, e) for e in events]
    pool.shutdown(wait=False)
    return futures


async def test_stream_leader_crash_mid_traffic(
    cluster: LocalNatsCluster, start_function: FunctionFactory
) -> None:
    fn = bridge(cluster, start_function)
    with SteadyTraffic(fn.url) as traffic:
        wait_until(lambda: traffic.answered() >= 60, 60, "60 answers before the crash")
        old_leader = await stream_leader(cluster)
        cluster.kill_node(old_leader)
        crashed_at = traffic.answered()
        # Go on until the bridge has stored 60 more events: the failover happened under load.
        wait_until(lambda: traffic.stored_since(crashed_at) >= 60, 90, "60 stored after crash")
    events, statuses = traffic.results()
    assert set(statuses) <= {200, 503}, Counter(statuses)
    new_leader = await stream_leader(cluster)
    assert new_leader != old_leader
    failed = [e for e, status in zip(events, statuses, strict=True) if status == 503]
    for event in failed:
        redeliver_until_stored(fn.url, event)

    ids = await stored_ids(cluster)
    assert ids == Counter(e["id"] for e in events)  # every event exactly once

    cluster.start_node(old_leader)
    wait_until(lambda: replicas_converged(cluster, len(events)), 60, "replicas converge")
    info = await stream_info(cluster)
    assert info.cluster.replicas is not None and len(info.cluster.replicas) == 2
    assert all(peer.current and not peer.offline for peer in info.cluster.replicas)


async def test_whole_cluster_outage_and_restart(
    cluster: LocalNatsCluster, start_function: FunctionFactory
) -> None:
    fn = bridge(cluster, start_function)
    before, during = fresh_events(30), fresh_events(10)
    assert [f.result(timeout=60) for f in send_all(fn.url, before)] == [200] * len(before)

    cluster.stop()
    statuses = [post_event(fn.url, event).status_code for event in during]
    assert statuses == [503] * len(during)
    wait_until(lambda: post_event(fn.url + "readyz", {}).status_code != 200, 30, "not ready")

    for index in range(len(cluster.nodes)):
        cluster.start_node(index)
    cluster.wait_healthy(60)
    for event in during:
        redeliver_until_stored(fn.url, event)

    ids = await stored_ids(cluster)  # file storage kept everything stored before the outage
    assert ids == Counter(e["id"] for e in before + during)
    wait_until(lambda: replicas_converged(cluster, len(before) + len(during)), 60, "converge")


async def test_two_nodes_down_stops_writes_until_one_returns(
    cluster: LocalNatsCluster, start_function: FunctionFactory
) -> None:
    fn = bridge(cluster, start_function)
    before, during = fresh_events(10), fresh_events(4)
    assert [f.result(timeout=60) for f in send_all(fn.url, before)] == [200] * len(before)

    cluster.stop_node(1)
    cluster.stop_node(2)
    # No quorum: nothing can be stored, and the bridge says so instead of answering 2xx.
    assert [post_event(fn.url, event).status_code for event in during] == [503] * len(during)

    cluster.start_node(1)
    for event in during:
        redeliver_until_stored(fn.url, event)
    assert await stored_ids(cluster) == Counter(e["id"] for e in before + during)


def client_node(cluster: LocalNatsCluster, name: str) -> int | None:
    """The node a client connection named ``name`` is attached to (from each /connz)."""
    for index in cluster.running():
        node = cluster.nodes[index]
        url = f"http://{node.host}:{node.monitor_port}/connz"
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                connections = json.loads(response.read()).get("connections") or []
        except OSError:  # a server on its way out: it holds no client any more
            continue
        if any(connection.get("name") == name for connection in connections):
            return index
    return None


async def test_lame_duck_prestop_moves_the_bridge_without_losing_events(
    cluster: LocalNatsCluster, start_function: FunctionFactory
) -> None:
    fn = bridge(cluster, start_function)
    # The exact preStop command of the StatefulSet, pointed at this node's pid file.
    sts = by_kind(build(REPO_ROOT / "nats" / "base"))[("StatefulSet", "nats")]
    pre_stop = sts["spec"]["template"]["spec"]["containers"][0]["lifecycle"]["preStop"]
    binary, *args = pre_stop["exec"]["command"]
    assert binary == "nats-server"
    with SteadyTraffic(fn.url) as traffic:
        wait_until(lambda: traffic.answered() >= 30, 60, "30 answers before lame duck")
        node = client_node(cluster, "stripe-bridge/stripe_event")
        assert node is not None
        pid_file = str(cluster.pid_file(node))
        args = [arg.replace("/var/run/nats/nats.pid", pid_file) for arg in args]
        subprocess.run([nats_server_binary(), *args], check=True, timeout=10)
        # Lame duck closes its clients spread over 30s (the server's minimum), after 1s.
        wait_until(
            lambda: client_node(cluster, "stripe-bridge/stripe_event") not in (node, None),
            45,
            "the function to move to another server",
        )
        moved_at = traffic.answered()
        wait_until(lambda: traffic.stored_since(moved_at) >= 30, 60, "30 stored after the move")
    events, statuses = traffic.results()

    assert set(statuses) <= {200, 503}, Counter(statuses)
    for event, status in zip(events, statuses, strict=True):
        if status == 503:
            redeliver_until_stored(fn.url, event)
    assert await stored_ids(cluster) == Counter(e["id"] for e in events)


def test_cluster_is_rendered_from_the_shared_template(cluster: LocalNatsCluster) -> None:
    for index, node in enumerate(cluster.nodes):
        assert node.config_file is not None
        text = node.config_file.read_text()
        assert f"server_name: n{index}" in text
        assert "user: publisher" in text and "$NATS_PUBLISHER_PASSWORD" in text
    assert asyncio.run(stream_leader(cluster)) in range(3)
