"""Benchmark ``POST /v1/check`` of one entitlements function process beside a raw KV get.

Run: ``.venv/bin/python bench/bench_entitlements.py [--checks N] [--concurrency C] [--json P]``.

In one run, on loopback only, it starts its own nats-server and one function process
(``stripe-bridge serve --source functions/billing_entitlements/main.py``, as the container
runs it), then measures, with the same request count and concurrency:

* the baseline: a raw ``kv.get`` of one usage count (nats-py, no HTTP);
* ``/v1/check`` without a reservation (HTTP, JSON, tier read + count read);
* ``/v1/check`` with ``reserve: true`` (one more compare-and-set write), for distinct
  customers so that only the work is measured, not contention on one key.

It prints checks/s and p50/p99 latency of each. Every loop is bounded; everything it
started stops at the end. Figures are printed, never asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from stripe_bridge.billing.limits import Window
from stripe_bridge.billing.usage_counter import count_key, usage_buckets
from stripe_bridge.ops.natsserver import NatsServer
from stripe_bridge_testing.processes import FunctionProcess

REPO_ROOT = Path(__file__).resolve().parent.parent


async def measure(
    name: str, count: int, concurrency: int, one: Callable[[int], Awaitable[None]]
) -> dict[str, Any]:
    """Run ``one(i)`` ``count`` times with ``concurrency`` workers; rate and latencies."""
    latencies: list[float] = []
    queue = iter(range(count))

    async def worker() -> None:
        for i in queue:
            started = time.perf_counter()
            await one(i)
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    ordered = sorted(latencies)
    return {
        "name": name,
        "checks": len(latencies),
        "rate": len(latencies) / elapsed,
        "p50_ms": statistics.median(ordered) * 1000,
        "p99_ms": ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000,
    }


async def run(checks: int, concurrency: int, url: str, fn_url: str) -> list[dict[str, Any]]:
    """The three measurements against a running server and function."""
    import nats

    nc = await nats.connect(url)
    try:
        kv = (await usage_buckets(nc.jetstream()))[Window.DAY]
        key = count_key("cus_bench", "api_calls", Window.DAY, datetime.now(UTC))
        await kv.put(key, b'{"used": 1, "last_seq": 1}')

        async def raw_get(_i: int) -> None:
            await kv.get(key)

        async with httpx.AsyncClient(base_url=fn_url, timeout=10) as client:

            def check(reserve: bool) -> Callable[[int], Awaitable[None]]:
                async def one(i: int) -> None:
                    customer = f"cus_{i}" if reserve else "cus_bench"
                    body = {"customer": customer, "meter": "api_calls", "reserve": reserve}
                    response = await client.post("/v1/check", json=body)
                    if response.status_code != 200 or response.json()["degraded"]:
                        raise RuntimeError(f"check failed: {response.status_code} {response.text}")

                return one

            await measure("warm-up", 50, 4, check(False))
            return [
                await measure("raw kv.get (baseline)", checks, concurrency, raw_get),
                await measure("/v1/check", checks, concurrency, check(False)),
                await measure("/v1/check reserve", checks, concurrency, check(True)),
            ]
    finally:
        await nc.close()


def main() -> int:
    """Start the servers, measure, print."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checks", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--json", type=Path, help="write the figures here too")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, NatsServer(Path(tmp) / "nats") as server:
        env = {"NATS_URL": server.url, "LOG_LEVEL": "WARNING", "STRIPE_WEBHOOK_SECRET": "whsec_x"}
        function = FunctionProcess("billing_entitlements", env, Path(tmp) / "fn", REPO_ROOT)
        function.start()
        try:
            figures = asyncio.run(run(args.checks, args.concurrency, server.url, function.url))
        finally:
            function.stop()
    print(f"{args.checks} each, concurrency {args.concurrency}, one function process:")
    for row in figures:
        print(
            f"  {row['name']:<24} {row['rate']:>8.0f} checks/s"
            f"   p50 {row['p50_ms']:6.2f} ms   p99 {row['p99_ms']:6.2f} ms"
        )
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
