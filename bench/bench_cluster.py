"""The bridge's events/s on one nats-server versus a 3-node R3 cluster, with each ceiling.

Run from the repository root: ``.venv/bin/python -m bench.bench_cluster [--quick]``.

In one run, on loopback only, it starts a single JetStream server (R1 stream) and a
3-node cluster rendered from the shared nats.conf template (R3 stream, publisher user),
then for each measures, side by side:

* the ceiling: nats-py ``js.publish`` of the same payloads, awaiting each PubAck;
* one bridge function (``invoice_paid``, started as the container does) receiving signed,
  distinct events;

at concurrency 1 and 32. Load generation, payloads and the HTTP client are those of
``bench_bridge.py``. Every process it starts is stopped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path

from stripe_bridge.ops.natsserver import NatsServer
from stripe_bridge.streams import StreamSpec, provision
from stripe_bridge_testing.natscluster import LocalNatsCluster
from stripe_bridge_testing.processes import FunctionProcess

from bench.bench_bridge import (
    FUNCTION,
    PREFIX,
    REPO_ROOT,
    STREAM,
    Load,
    baseline,
    baseline_payloads,
    function_env,
    http_load,
    machine,
    payloads,
)


async def provision_stream(servers: list[str], replicas: int, **auth: str) -> None:
    """Create the bridge's stream with ``replicas`` replicas."""
    import nats

    nc = await nats.connect(servers=servers, **auth)
    try:
        await provision(nc.jetstream(), StreamSpec(STREAM, PREFIX, replicas=replicas))
    finally:
        await nc.close()


def measure(
    target: str,
    publish_url: str,
    env: dict[str, str],
    nats_pid: int,
    counts: dict[int, int],
    workdir: Path,
) -> list[tuple[str, Load]]:
    """Ceiling and bridge loads against one target, at each concurrency."""
    results = []
    for concurrency, count in counts.items():
        load = asyncio.run(baseline(publish_url, baseline_payloads(count), concurrency, nats_pid))
        results.append((target, load))
    with FunctionProcess(FUNCTION, env, workdir / target, REPO_ROOT) as function:
        assert function.process is not None
        pids = {"function": function.process.pid, "nats": nats_pid}
        asyncio.run(http_load("bridge (warm-up)", function, payloads(100), 8, pids))
        for concurrency, count in counts.items():
            load = asyncio.run(http_load("bridge", function, payloads(count), concurrency, pids))
            results.append((target, load))
    return results


def table(results: list[tuple[str, Load]]) -> str:
    """The figures, one row per target, load and concurrency."""
    rows = [
        f"{'target':<16} {'load':<22} {'conc':>4} {'events':>6} {'ev/s':>8} "
        f"{'p50 ms':>7} {'p99 ms':>7} {'% ceiling':>9}"
    ]
    ceilings = {
        (target, load.concurrency): load.rate
        for target, load in results
        if load.name.startswith("baseline")
    }
    for target, load in results:
        ceiling = ceilings[(target, load.concurrency)]
        rows.append(
            f"{target:<16} {load.name:<22} {load.concurrency:>4} {load.events:>6} "
            f"{load.rate:>8.0f} {load.percentile(50):>7.2f} {load.percentile(99):>7.2f} "
            f"{load.rate / ceiling:>9.0%}"
        )
    return "\n".join(rows)


def main(argv: Sequence[str] | None = None) -> int:
    """Measure both targets in one run and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="fewer events (smoke run)")
    parser.add_argument("--events", type=int, help="events per concurrency-32 phase")
    args = parser.parse_args(argv)
    events = args.events or (500 if args.quick else 3000)
    counts = {1: max(100, events // 5), 32: events}
    results: list[tuple[str, Load]] = []
    with tempfile.TemporaryDirectory(prefix="stripe-bridge-bench-") as tmp, ExitStack() as stack:
        workdir = Path(tmp)
        single = stack.enter_context(NatsServer(workdir / "single"))
        assert single.process is not None
        asyncio.run(provision_stream([single.url], 1))
        results += measure(
            "single R1", single.url, function_env(single.url), single.process.pid, counts, workdir
        )
        stack.close()  # the single server is done: give its CPU back before the cluster runs

        cluster = stack.enter_context(LocalNatsCluster(workdir / "cluster"))
        password = cluster.passwords["publisher"]
        admin = {"user": "admin", "password": cluster.passwords["admin"]}
        asyncio.run(provision_stream(cluster.servers(), 3, **admin))
        env = function_env(cluster.url(user=None), NATS_USER="publisher", NATS_PASSWORD=password)
        leader_pid = cluster.nodes[0].process.pid if cluster.nodes[0].process else 0
        results += measure(
            "cluster 3x R3", cluster.url("publisher", nodes=[0]), env, leader_pid, counts, workdir
        )
    print(f"machine: {machine()}")
    print(table(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
