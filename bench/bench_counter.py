"""Benchmark count-usage: usage records counted per second from a pre-filled USAGE stream.

Run from the repository root: ``.venv/bin/python -m bench.bench_counter [--records N]
[--repeats R] [--against DIR] [--partitions N] [--r3] [--interleave] [--json P]``.

On loopback only it starts its own nats-server (``--r3``: a 3-node cluster from the shared
nats.conf, USAGE and the counter's buckets with 3 replicas, as in production), fills
USAGE with ``--records`` usage records of the month-end shape (1,000 customers, tokens
counted per month and api_calls per day, 10 records per customer and Stripe event;
``--interleave``: every customer in turn, so that a batch has nothing to merge), then
runs ``UsageCounter`` from an empty checkpoint until it has read them all, in a process of
its own (``--child``), ``--repeats`` times. With ``--against DIR`` (another checkout's
``shared/``, through ``PYTHONPATH``) both libraries run in turns (A B, B A, ...), so a
neighbour's burst falls on both alike. Before each run the counter's buckets are deleted:
every run counts everything from scratch. With ``--partitions N`` this checkout runs in
turns as one counter and as N partitions at once (``--partitions N --partition I``, a
process each): records/s is then all records over the slowest partition's seconds, and
CPU per record is summed over the partitions (``max part us/rec``: the busiest one's).

Printed per library: records/s (from the counter's start to its last record read), the
counter's CPU per record and nats-server's (all nodes), each the median of the repeats
with its lowest and highest; the ratio is taken within each repeat. The load average is
printed before and after. Every loop is bounded; everything it started stops at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack, suppress
from pathlib import Path
from typing import Any

from bench.bench_bridge import cpu_seconds, relative_spread, spread

REPO_ROOT = Path(__file__).resolve().parents[1]
#: Buckets the counter writes: deleted before every run.
BUCKETS = (
    "BILLING_USAGE_MINUTE",
    "BILLING_USAGE_DAY",
    "BILLING_USAGE_MONTH",
    "BILLING_USAGE_TOTAL",
    "BILLING_USAGE_SEEN",
    "BILLING_RESERVATIONS",
)
CUSTOMERS = 1_000
DEADLINE = 600.0
THIS = "this checkout"


async def fill(url: str, records: int, replicas: int, interleave: bool = False) -> None:
    """Provision USAGE and publish ``records`` usage records into it (``interleave``: each
    record of another customer than the ones before it, none together)."""
    from stripe_bridge.billing.usage import UsageRecord, encode, provision_usage_streams

    import nats

    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        await provision_usage_streams(js, replicas)
        pending = []
        for n in range(records):
            # 10 records of one event together, or (interleave) every customer in turn.
            customer = f"cus_{(n if interleave else n // 10) % CUSTOMERS}"
            meter = "tokens" if n % 2 else "api_calls"
            record = UsageRecord(meter=meter, customer_id=customer, value=1 + n % 7, id=f"b{n}")
            subject, body, headers = encode(record)
            pending.append(js.publish(subject, body, headers=headers))
            if len(pending) >= 500:
                await asyncio.gather(*pending)
                pending = []
        await asyncio.gather(*pending)
    finally:
        await nc.close()


async def reset(url: str) -> None:
    """Delete the counter's buckets: the next run starts from nothing."""
    from nats.js.errors import NotFoundError

    import nats

    nc = await nats.connect(url)
    try:
        for bucket in BUCKETS:
            with suppress(NotFoundError):
                await nc.jetstream().delete_key_value(bucket)
    finally:
        await nc.close()


async def count(
    url: str, records: int, replicas: int, partition: tuple[int, int] | None
) -> dict[str, float]:
    """In the child: run a counter (``partition``: index, count) until its checkpoint is at
    the last of ``records``; its seconds and CPU."""
    from stripe_bridge.billing.tiers import DEFAULT_TIERS
    from stripe_bridge.billing.usage_counter import UsageCounter

    import nats

    class Counter(UsageCounter):
        """Tells where its own checkpoint is without reading it back from KV."""

        position = 0

        async def save_checkpoint(self, seq: int, *key: str | None) -> None:
            await super().save_checkpoint(seq, *key)
            if not any(key):
                self.position = max(self.position, seq)

    nc = await nats.connect(url)
    try:
        options: dict[str, Any] = {}
        if partition is not None:  # not in a library from before partitions (--against)
            from stripe_bridge.billing.usage_partitions import Partition

            options["partition"] = Partition(*partition)
        counter = Counter(nc, DEFAULT_TIERS, name="bench", bucket_replicas=replicas, **options)
        stop = asyncio.Event()
        cpu, started = time.process_time(), time.perf_counter()
        task = asyncio.create_task(counter.run(stop, fetch_wait=0.2))
        deadline = time.monotonic() + DEADLINE
        while counter.position < records:
            if task.done():
                task.result()
                raise RuntimeError("the counter stopped")
            if time.monotonic() > deadline:
                raise TimeoutError("the counter did not read every record")
            await asyncio.sleep(0.01)
        seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
        stop.set()
        await task
        counted = counter.metrics.records.labels("tokens", "counted")._value.get()
        counted += counter.metrics.records.labels("api_calls", "counted")._value.get()
    finally:
        await nc.close()
    return {"seconds": seconds, "cpu": cpu, "counted": counted}


def run_once(
    url: str, records: int, replicas: int, shared: Path | None, partitions: int = 1
) -> dict[str, float]:
    """One counter run in child processes, one per partition, all at once (``shared``: the
    library to run, else this one)."""
    env = dict(os.environ)
    if shared is not None:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(shared), env.get("PYTHONPATH")]))
    command = [sys.executable, "-m", "bench.bench_counter", "--child", url]
    command += ["--records", str(records), "--replicas", str(replicas)]
    commands = [command]
    if partitions > 1:
        commands = [[*command, "--partitions", str(partitions), "--partition", str(i)]
                    for i in range(partitions)]  # fmt: skip
    children = [
        subprocess.Popen(c, env=env, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for c in commands
    ]
    parts = []
    for child in children:
        out, err = child.communicate(timeout=DEADLINE + 60)
        if child.returncode != 0:
            raise RuntimeError(err.decode()[-2000:])
        parts.append(json.loads(out.decode().strip().splitlines()[-1]))
    figures = {
        "seconds": max(p["seconds"] for p in parts),
        "cpu": sum(p["cpu"] for p in parts),
        "cpu_max": max(p["cpu"] for p in parts),
        "counted": sum(p["counted"] for p in parts),
    }
    if figures["counted"] != records:
        raise RuntimeError(f"counted {figures['counted']} of {records} records")
    return figures


def measure(
    url: str,
    nats_pids: list[int],
    records: int,
    repeats: int,
    replicas: int,
    against: Path | None,
    partitions: int = 1,
) -> dict[str, list[dict[str, float]]]:
    """Every library's (or partition count's) runs, in turns."""
    sides: list[tuple[str, Path | None, int]] = [(THIS, None, 1)]
    if against is not None:
        sides.append((f"against {against}", against, 1))
    if partitions > 1:
        sides.append((f"{THIS}, {partitions} partitions", None, partitions))
    runs: dict[str, list[dict[str, float]]] = {name: [] for name, _, _ in sides}
    for repeat in range(repeats):
        for name, shared, n in sides[repeat % len(sides) :] + sides[: repeat % len(sides)]:
            asyncio.run(reset(url))
            nats_cpu = sum(cpu_seconds(pid) for pid in nats_pids)
            figures = run_once(url, records, replicas, shared, n)
            figures["nats_cpu"] = sum(cpu_seconds(pid) for pid in nats_pids) - nats_cpu
            figures["repeat"] = repeat
            runs[name].append(figures)
            print(f"  repeat {repeat + 1}, {name}: {records / figures['seconds']:,.0f} records/s")
    return runs


def report(runs: dict[str, list[dict[str, float]]], records: int, target: str) -> list[str]:
    """The table: records/s, CPU per record, and this checkout over the other per repeat."""
    lines = [f"{target}: {records:,} records, {CUSTOMERS:,} customers"]
    lines.append(
        f"{'library':<40} {'records/s':>24} {'counter us/rec':>22} "
        f"{'max part us/rec':>20} {'nats us/rec':>20}"
    )
    noisy = []
    for name, figures in runs.items():
        rates = [records / f["seconds"] for f in figures]
        cpu = [f["cpu"] / records * 1e6 for f in figures]
        busiest = [f["cpu_max"] / records * 1e6 for f in figures]
        nats = [f["nats_cpu"] / records * 1e6 for f in figures]
        lines.append(
            f"{name[:40]:<40} {spread(rates, ',.0f'):>24} {spread(cpu, '.0f'):>22} "
            f"{spread(busiest, '.0f'):>20} {spread(nats, '.0f'):>20}"
        )
        if len(rates) > 1 and relative_spread(rates) > 0.25:
            noisy.append(name)
    if len(runs) == 2:
        (_, this), (second, other) = runs.items()
        ratios = [b["seconds"] / a["seconds"] for a, b in zip(this, other, strict=True)]
        label = "this checkout over the other"
        if second.startswith(THIS):  # --partitions: the partitions over one counter
            ratios, label = [1 / r for r in ratios], f"{second} over one counter"
        lines.append(f"{label}, records/s within each repeat: {spread(ratios, '.2f')}x")
    for name in noisy:
        lines.append(f"  TOO NOISY TO CONCLUDE on {name}: its repeats spread more than 25 %")
    return lines


def main() -> int:
    """Parse arguments, start the server(s), measure, print."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=20_000, help="usage records in USAGE")
    parser.add_argument("--repeats", type=int, default=5, help="runs per library, in turns")
    parser.add_argument("--against", type=Path, help="another checkout's shared/ to compare")
    parser.add_argument(
        "--partitions",
        type=int,
        default=1,
        help="also run this checkout as N count-usage partitions at once, in turns with one",
    )
    parser.add_argument("--partition", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--r3", action="store_true", help="a 3-node cluster, 3 replicas")
    parser.add_argument(
        "--interleave",
        action="store_true",
        help="every record of another customer than its neighbours (one record per count "
        "key in a batch: the least a batch can merge)",
    )
    parser.add_argument("--json", type=Path, help="write every run's figures here")
    parser.add_argument("--child", metavar="URL", help=argparse.SUPPRESS)
    parser.add_argument("--replicas", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        partition = None if args.partition is None else (args.partition, args.partitions)
        print(json.dumps(asyncio.run(count(args.child, args.records, args.replicas, partition))))
        return 0

    from stripe_bridge.ops.natsserver import NatsServer
    from stripe_bridge_testing.natscluster import LocalNatsCluster

    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="stripe-bridge-bench-") as tmp, ExitStack() as stack:
        if args.r3:
            cluster = stack.enter_context(LocalNatsCluster(Path(tmp) / "cluster"))
            url, replicas = cluster.url(nodes=[0]), 3  # one node: nats-py takes one URL here
            pids = [n.process.pid for n in cluster.nodes if n.process is not None]
            target = "3-node cluster, R3"
        else:
            server = stack.enter_context(NatsServer(Path(tmp) / "nats"))
            assert server.process is not None
            url, replicas, pids = server.url, 1, [server.process.pid]
            target = "one nats-server, R1"
        asyncio.run(fill(url, args.records, replicas, args.interleave))
        if args.interleave:
            target += ", customers interleaved"
        runs = measure(
            url, pids, args.records, args.repeats, replicas, args.against, args.partitions
        )
    load_after = os.getloadavg()
    print()
    print("\n".join(report(runs, args.records, target)))
    print(
        f"load average (1, 5, 15 min) before {', '.join(f'{x:.1f}' for x in load_before)}, "
        f"after {', '.join(f'{x:.1f}' for x in load_after)}; {os.cpu_count()} CPUs"
    )
    if args.json:
        args.json.write_text(json.dumps({"records": args.records, "target": target, "runs": runs}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
