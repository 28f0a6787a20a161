"""Benchmark what idle entitlements watches cost: nats-server's CPU and memory, and the
watching process's CPU, with ``--customers`` customers watched (six ordered consumers
each) against none.

Run from the repository root: ``.venv/bin/python -m bench.bench_watch_cost [--customers N]
[--repeats R] [--phase-seconds S]``.

On loopback only it starts its own nats-server and the billing buckets, then runs two
phases in turns, ``--repeats`` times (none, watched; watched, none; ...): ``none`` with no
customer watched (their consumers gone from the server), ``watched`` with ``--customers``
served by one ``EntitlementsClient``. Nothing is written meanwhile: what a phase costs is
the watches' idle heartbeats (one per consumer per 5 s, nats-py's default for ordered
consumers) and their upkeep. Printed: nats-server's CPU (ms per second) and RSS, the
client process's CPU, and per 1,000 consumers the difference within each repeat; each the
median of the repeats with its lowest and highest, and the load average before and after.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from stripe_bridge.billing.tiers import DEFAULT_TIERS
from stripe_bridge.ops.natsserver import NatsServer
from stripe_bridge_entitlements import keys
from stripe_bridge_entitlements.client import EntitlementsClient
from stripe_bridge_entitlements.windows import Window
from stripe_bridge_testing.entitlements_bridge import provision_for_clients
from stripe_bridge_testing.waiting import wait_until_async

from bench.bench_bridge import cpu_seconds, spread

#: Streams holding the watches' consumers.
STREAMS = [f"KV_{keys.usage_bucket(w)}" for w in Window] + [
    "KV_BILLING_TIERS",
    "KV_BILLING_RESERVATIONS",
]


def rss_mib(pid: int) -> float:
    """Resident memory of process ``pid``, MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


async def consumers(js: Any) -> int:
    """Consumers on the watched buckets' streams."""
    infos = await asyncio.gather(*(js.stream_info(s) for s in STREAMS))
    return sum(int(info.state.consumer_count or 0) for info in infos)


async def phase(server_pid: int, seconds: float) -> dict[str, float]:
    """nats-server's and this process's CPU (ms/s) over ``seconds`` idle, and RSS."""
    server_before, own_before = cpu_seconds(server_pid), time.process_time()
    await asyncio.sleep(seconds)  # the measured window, not synchronisation
    return {
        "server_ms": (cpu_seconds(server_pid) - server_before) * 1000 / seconds,
        "client_ms": (time.process_time() - own_before) * 1000 / seconds,
        "rss": rss_mib(server_pid),
    }


async def run(customers: int, repeats: int, seconds: float) -> None:
    import nats

    with tempfile.TemporaryDirectory() as tmp:
        server = NatsServer(Path(tmp) / "nats").start()
        try:
            assert server.process is not None
            pid = server.process.pid
            nc = await nats.connect(server.url)
            js = nc.jetstream()
            await provision_for_clients(js, DEFAULT_TIERS.model_dump_json().encode())
            client = await EntitlementsClient.connect(server.url, watch_expiry=1)
            names = [f"cus_{i}" for i in range(customers)]
            rows: dict[str, list[dict[str, float]]] = {"none": [], "watched": []}
            try:
                for repeat in range(repeats):
                    order = ["none", "watched"] if repeat % 2 == 0 else ["watched", "none"]
                    for row in order:
                        if row == "watched":
                            for i in range(0, customers, 50):
                                await asyncio.gather(*(client.serve(c) for c in names[i : i + 50]))
                            want = 6 * customers
                        else:
                            for name in names:
                                await client.forget(name)
                            want = 0
                        await wait_until_async(
                            functools.partial(_consumers_are, js, want), 120, f"{want} consumers"
                        )
                        rows[row].append(await phase(pid, seconds))
            finally:
                await client.close()
                await nc.close()
        finally:
            server.stop()
    _report(rows, 6 * customers)


async def _consumers_are(js: Any, want: int) -> bool:
    return await consumers(js) == want


def _report(rows: dict[str, list[dict[str, float]]], count: int) -> None:
    for row, phases in rows.items():
        print(
            f"{row:8} server CPU {spread([p['server_ms'] for p in phases], '.1f')} ms/s, "
            f"RSS {spread([p['rss'] for p in phases], '.0f')} MiB, "
            f"client CPU {spread([p['client_ms'] for p in phases], '.1f')} ms/s"
        )
    per = 1000 / count
    pairs = list(zip(rows["none"], rows["watched"], strict=True))
    for key, label, spec in (
        ("server_ms", "server CPU ms/s", ".2f"),
        ("rss", "server RSS MiB", ".1f"),
        ("client_ms", "client CPU ms/s", ".2f"),
    ):
        diffs = [(w[key] - n[key]) * per for n, w in pairs]
        print(f"per 1,000 consumers: {label} {spread(diffs, spec)}")


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, run the phases, print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--customers", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--phase-seconds", type=float, default=15)
    args = parser.parse_args(argv)
    print(f"load average before: {os.getloadavg()}")
    asyncio.run(run(args.customers, args.repeats, args.phase_seconds))
    print(f"load average after: {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
