"""RSS of the memory idempotency store up to its bound and after it wraps.

Run: ``.venv/bin/python bench/bench_memory_store.py [--quick] [--store-only] [--json out.json]``.

Two measurements, each feeding distinct event ids for three times the bound:

* in process: ``MemoryStore`` at the default bound (``IDEMPOTENCY_MEMORY_MAX_ENTRIES``,
  100000), claim then mark done per id, as a delivery does: the bound's memory cost
  (KiB per remembered event), the growth after the bound (should be ~0), the garbage
  collector's own full collections after the bound (none: the store alone allocates no
  net objects then) and how long one full collection takes with the store at its bound
  (how much of it the collector scans);
* a function process (``stripe-bridge serve``, memory backend, a small bound) receiving
  signed distinct deliveries over HTTP from 8 senders, with its own nats-server on loopback:
  the whole process's RSS at each multiple of the bound.

Figures only, never pass/fail (a shared machine is noisy). Every process it starts is
stopped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import secrets
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
from stripe_bridge.idempotency import MemoryStore
from stripe_bridge.ops.natsserver import NatsServer
from stripe_bridge.ops.samples import sample_event
from stripe_bridge.signature import sign_header
from stripe_bridge.streams import StreamSpec, provision
from stripe_bridge_testing.processes import FunctionProcess, rss_mib

REPO_ROOT = Path(__file__).resolve().parent.parent
SECRET = "whsec_bench_" + "m" * 32


def in_process(bound: int, rounds: int = 3) -> dict[str, Any]:
    """RSS (MiB) of this process after each ``bound`` distinct ids stored in a MemoryStore,
    and the garbage collector's full collections once the store is at its bound."""
    store = MemoryStore(30.0, 4 * 86400, bound)
    samples = [rss_mib(os.getpid())]
    full: list[float] = []  # seconds of each full collection after the first round (none)
    started = 0.0

    def timed(phase: str, info: dict[str, int]) -> None:
        nonlocal started
        if phase == "start":
            started = time.perf_counter()
        elif info["generation"] == 2 and len(samples) > 1:
            full.append(time.perf_counter() - started)

    async def feed() -> None:
        for _ in range(rounds):
            for _ in range(bound):
                event_id = "evt_" + secrets.token_hex(12)
                await store.claim(event_id)
                await store.mark_done(event_id)
            samples.append(rss_mib(os.getpid()))

    gc.callbacks.append(timed)
    try:
        asyncio.run(feed())
    finally:
        gc.callbacks.remove(timed)
    gc.collect()
    collect_seconds = []
    for _ in range(5):  # full collections with the store at its bound: what it scans of it
        collect_started = time.perf_counter()
        gc.collect()
        collect_seconds.append(time.perf_counter() - collect_started)
    return {
        "full_collections_after_bound": len(full),
        "full_collection_at_bound_ms": 1e3 * sorted(collect_seconds)[2],  # the median
        "bound": bound,
        "rss_mib": samples,
        "kib_per_entry": (samples[1] - samples[0]) * 1024 / bound,
        "growth_after_bound_mib": samples[-1] - samples[1],
    }


async def _provision(url: str) -> None:
    import nats

    nc = await nats.connect(url)
    try:
        await provision(nc.jetstream(), StreamSpec("STRIPE", "stripe"))
    finally:
        await nc.close()


def through_a_function(bound: int, rounds: int = 3) -> dict[str, Any]:
    """RSS (MiB) of a function process after each ``bound`` distinct deliveries."""
    with tempfile.TemporaryDirectory() as tmp, NatsServer(Path(tmp) / "nats") as nats_server:
        asyncio.run(_provision(nats_server.url))
        env = {
            "STRIPE_WEBHOOK_SECRET": SECRET,
            "NATS_URL": nats_server.url,
            "IDEMPOTENCY_MEMORY_MAX_ENTRIES": str(bound),
            "LOG_LEVEL": "WARNING",
        }
        function = FunctionProcess("invoice_paid", env, Path(tmp) / "fn", REPO_ROOT).start()
        try:
            assert function.process is not None
            pid = function.process.pid
            template = sample_event("invoice.paid")
            samples = [rss_mib(pid)]
            with httpx.Client(timeout=30) as client, ThreadPoolExecutor(8) as pool:

                def deliver(_: int) -> int:
                    event = {**template, "id": "evt_" + secrets.token_hex(12)}
                    body = json.dumps(event).encode()
                    headers = {"Stripe-Signature": sign_header(SECRET.encode(), body)}
                    return client.post(function.url, content=body, headers=headers).status_code

                for _ in range(rounds):
                    statuses = list(pool.map(deliver, range(bound)))
                    if set(statuses) != {200}:
                        raise RuntimeError(f"not every delivery stored: {set(statuses)}")
                    samples.append(rss_mib(pid))
        finally:
            function.stop()
    return {
        "bound": bound,
        "rss_mib": samples,
        "growth_after_bound_mib": samples[-1] - samples[1],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small bounds, a smoke run")
    parser.add_argument("--json", type=Path, help="write every figure here")
    parser.add_argument("--store-only", action="store_true", help="only the in-process store")
    args = parser.parse_args()
    store = in_process(1000 if args.quick else 100_000)
    print(
        f"MemoryStore, bound {store['bound']}: {store['kib_per_entry']:.2f} KiB per entry"
        f" ({store['kib_per_entry'] * store['bound'] / 1024:.1f} MiB at the bound);"
        f" after the bound, 2 x {store['bound']} more ids:"
        f" {store['growth_after_bound_mib']:+.1f} MiB;"
        f" {store['full_collections_after_bound']} full garbage collections on their own,"
        f" one full collection at the bound {store['full_collection_at_bound_ms']:.2f} ms"
    )
    if args.store_only:
        if args.json:
            args.json.write_text(json.dumps({"store": store}, indent=2))
        return
    function = through_a_function(200 if args.quick else 5000)
    rss = " -> ".join(f"{value:.1f}" for value in function["rss_mib"])
    print(
        f"function process, bound {function['bound']}, RSS MiB at 0/1/2/3 x bound: {rss}"
        f" (after the bound {function['growth_after_bound_mib']:+.1f} MiB)"
    )
    if args.json:
        args.json.write_text(json.dumps({"store": store, "function": function}, indent=2))


if __name__ == "__main__":
    main()
