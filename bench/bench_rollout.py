"""A rolling restart of the 3-node cluster under write load, with the old and the new probes.

Run from the repository root: ``.venv/bin/python -m bench.bench_rollout [--lag-mb 300]``.

For each probe set (``old``: the pre-#15 ``js-enabled-only`` startup and ``js-server-only``
readiness; ``new``: what nats/base/statefulset.yaml has now) it starts a fresh loopback
cluster from the shared nats.conf template, creates the R3 ``STRIPE`` stream and keeps
writers publishing to it, then rolls the cluster as the StatefulSet controller does
(``stripe_bridge_testing.rollout``): each node is stopped until the stream grew by ``--lag-mb``,
restarted, and probed as the kubelet would with the manifest's exact paths, periods and
thresholds. It prints, per node: the lag, time down, when the startup probe and readiness
passed (seconds after the restart) and whether the node's replica then held every message
written while it was down; and for the writers: acknowledged, first attempts refused and
retried (as Stripe retries a 503), lost, and the slowest write.

``--timeline`` instead restarts one node after a lag and polls the three health endpoints
every 50 ms, printing when each answer changes beside the replica's catch-up: the
measurement the new probes were designed from. Everything runs on loopback and stops.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path
from typing import Any

from stripe_bridge.deploy.kustomize import build
from stripe_bridge.inbox import inbox_prefix
from stripe_bridge.streams import StreamSpec, provision
from stripe_bridge_testing.natscluster import LocalNatsCluster
from stripe_bridge_testing.rollout import (
    Probe,
    Roller,
    Writes,
    http_probe,
    nats_probes,
    write_continuously,
)

REPO_ROOT = Path(__file__).resolve().parent.parent
STREAM = "STRIPE"
#: The probes before #15 (nats/base/statefulset.yaml at bbd868a).
OLD_PROBES = {
    "startup": Probe("/healthz?js-enabled-only=true", "monitor", 10, 10, 5, 1, 90),
    "readiness": Probe("/healthz?js-server-only=true", "monitor", 0, 10, 5, 1, 3),
    "liveness": Probe("/healthz?js-enabled-only=true", "monitor", 0, 30, 5, 1, 3),
}
ENDPOINTS = ("/healthz", "/healthz?js-enabled-only=true", "/healthz?js-server-only=true")


def manifest_probes() -> dict[str, Probe]:
    """The probes of the production overlay's StatefulSet."""
    (sts,) = [
        o for o in build(REPO_ROOT / "nats/overlays/production") if o["kind"] == "StatefulSet"
    ]
    return nats_probes(sts)


async def connect(cluster: LocalNatsCluster, user: str) -> Any:
    """A nats-py connection as ``user`` to every node, reconnecting quietly."""
    import nats

    async def quiet(_exc: Exception) -> None:
        return None

    return await nats.connect(
        servers=cluster.servers(),
        user=user,
        password=cluster.passwords[user],
        inbox_prefix=inbox_prefix(user),
        max_reconnect_attempts=-1,
        reconnect_time_wait=0.1,
        error_cb=quiet,
    )


async def with_writers(
    cluster: LocalNatsCluster, writers: int, payload_kb: int, rate: float, work: Any
) -> tuple[Any, Writes]:
    """Run ``work()`` while ``writers`` tasks publish to STRIPE; return its result and counts."""
    admin = await connect(cluster, "admin")
    await provision(admin.jetstream(), StreamSpec(STREAM, "stripe", replicas=3))
    await admin.close()
    nc = await connect(cluster, "publisher")
    js = nc.jetstream()
    stop = asyncio.Event()
    writes = Writes()
    payload = b"x" * (payload_kb * 1024)
    tasks = [
        asyncio.create_task(
            write_continuously(js, f"stripe.test.w{i}", payload, stop, writes, 5.0, rate / writers)
        )
        for i in range(writers)
    ]
    try:
        result = await work()
    finally:
        stop.set()
        await asyncio.gather(*tasks)
        await nc.close()
    return result, writes


def roll_once(name: str, probes: dict[str, Probe], args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        cluster = LocalNatsCluster(Path(tmp), max_file_store="4G")
        with cluster:
            roller = Roller(cluster, probes, STREAM)

            async def work() -> Any:
                return await roller.roll(args.lag_mb * 1024 * 1024, lag_timeout=600)

            started = time.monotonic()
            rolls, writes = asyncio.run(
                with_writers(cluster, args.writers, args.payload_kb, args.rate, work)
            )
            total = time.monotonic() - started
    print(
        f"\n== {name} probes: startup {probes['startup'].path},"
        f" readiness {probes['readiness'].path}"
    )
    print("node  lag MB  down s  startup s  ready s  current@startup  current@ready")
    for r in rolls:
        print(
            f"n{r.node}   {r.lag_bytes / 2**20:6.0f}  {r.down_seconds:6.1f}"
            f"  {r.startup_passed:9.1f}  {r.ready:7.1f}"
            f"  {r.current_at_startup!s:15}  {r.current_at_ready}"
        )
    print(
        f"writes: {writes.acked} acked, {writes.retried} retried {writes.errors or ''},"
        f" {writes.failed} lost,"
        f" slowest {writes.slowest:.2f} s; roll {total:.0f} s"
    )


def timeline(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        cluster = LocalNatsCluster(Path(tmp), max_file_store="4G")
        with cluster:
            roller = Roller(cluster, manifest_probes(), STREAM)

            async def work() -> Any:
                index = 2
                before = await asyncio.to_thread(roller.stream_bytes, 0)
                cluster.stop_node(index)
                while await asyncio.to_thread(roller.stream_bytes, 0) - before < (
                    args.lag_mb * 2**20
                ):
                    await asyncio.sleep(0.1)
                target = cluster.local_stream_state(0, STREAM)["last_seq"]  # type: ignore[index]
                started = time.monotonic()
                cluster.start_node(index)
                node = cluster.nodes[index]
                last: dict[str, bool | None] = dict.fromkeys(ENDPOINTS)
                events = []
                caught_up = None
                while time.monotonic() - started < args.timeline_seconds:
                    now = time.monotonic() - started
                    for path in ENDPOINTS:
                        ok = http_probe(node.host, node.monitor_port, path, 1.0)
                        if ok != last[path]:
                            events.append((now, path, ok))
                            last[path] = ok
                    if caught_up is None:
                        state = cluster.local_stream_state(index, STREAM) or {}
                        if state.get("last_seq", 0) >= target:
                            caught_up = now
                    await asyncio.sleep(0.05)
                return events, caught_up

            (events, caught_up), writes = asyncio.run(
                with_writers(cluster, args.writers, args.payload_kb, args.rate, work)
            )
    print(f"lag {args.lag_mb} MB; replica caught up at {caught_up} s after restart")
    for at, path, ok in events:
        print(f"{at:7.2f} s  {path:32} {'200' if ok else 'fail'}")
    print(
        f"writes: {writes.acked} acked, {writes.retried} retried, {writes.failed} lost,"
        f" slowest {writes.slowest:.2f} s"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lag-mb", type=int, default=300, help="backlog per restarted node")
    parser.add_argument("--writers", type=int, default=8, help="concurrent publishers")
    parser.add_argument("--payload-kb", type=int, default=64, help="message size")
    parser.add_argument("--rate", type=float, default=200.0, help="messages/s, all writers")
    parser.add_argument("--probes", choices=("old", "new", "both"), default="both")
    parser.add_argument(
        "--timeline", action="store_true", help="endpoint answers after one restart"
    )
    parser.add_argument("--timeline-seconds", type=float, default=30.0)
    args = parser.parse_args()
    if args.timeline:
        timeline(args)
        return
    if args.probes in ("old", "both"):
        roll_once("old", OLD_PROBES, args)
    if args.probes in ("new", "both"):
        roll_once("new", manifest_probes(), args)


if __name__ == "__main__":
    main()
