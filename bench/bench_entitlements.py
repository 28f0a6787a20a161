"""Benchmark the in-process entitlements client beside raw nats-py KV calls, in one run.

Run from the repository root: ``.venv/bin/python -m bench.bench_entitlements [--repeats R]
[--checks N] [--ops N] [--held 0,1000,10000] [--against DIR] [--json P]``.

On loopback only it starts its own nats-server, creates the buckets the bridge creates and
publishes a tier file (the free tier with a limit too high to reach), then measures, in
``--repeats`` interleaved repeats (each repeat runs every row once, starting one row later
than the repeat before):

* ``raw kv.get`` (nats-py, one count): the round trip a check over the network costs;
* ``client.check``: ``EntitlementsClient.check`` from memory, one call at a time;
* ``raw kv.update``: a compare-and-set loop on one key (nats-py), the floor of any exact
  reservation;
* ``client.reserve``: ``EntitlementsClient.reserve``, one at a time (decides by the watched
  count and ledger, compare-and-sets the ledger: one write under the id it makes);
* ``propagation``: a count written with ``kv.put`` until ``client.check`` sees it;
* ``reserve, N held``: ``client.reserve`` on a customer already holding N reservations;
* ``raw kv.get x16`` and ``function /v1/check x16``: 16 concurrent raw gets beside 16
  keep-alive connections POSTing non-reserving checks to the ``billing_entitlements``
  function, served as the container serves it (its own process, the same tier file);
  with ``--against DIR`` (a checkout of another revision, e.g. ``git worktree add``) also
  ``function /v1/check x16 @DIR``: that checkout's function, interleaved with this one's.

Every figure printed is the median of the repeats with its lowest and highest. Every loop
is bounded; everything it started stops at the end. Figures are printed, never asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from stripe_bridge.billing.tiers import DEFAULT_TIERS, TierConfig
from stripe_bridge.billing.usage_counter import count_key
from stripe_bridge.ops.natsserver import NatsServer
from stripe_bridge_entitlements.client import EntitlementsClient
from stripe_bridge_entitlements.windows import Window
from stripe_bridge_testing.entitlements_bridge import provision_for_clients
from stripe_bridge_testing.processes import FunctionProcess

from bench.bench_bridge import HttpConnection

#: The free tier with limits no run reaches: every reservation is granted and held.
ROOMY = TierConfig.model_validate(
    DEFAULT_TIERS.model_dump() | {"tiers": [{"name": "free", "limits": {"api_calls": 10**12}}]}
)
LIMIT = 10**12
#: Concurrent requests of the function's row and its raw baseline (issue #19's target: the
#: function at >= 0.5x raw kv.get's rate, p99 < 10 ms).
CONCURRENCY = 16
REPO_ROOT = Path(__file__).resolve().parent.parent


def figures(name: str, latencies: list[float], elapsed: float, unit: float) -> dict[str, Any]:
    """Rate and p50/p99 of one phase (``unit``: seconds per printed unit)."""
    ordered = sorted(latencies)
    return {
        "name": name,
        "ops": len(ordered),
        "rate": len(ordered) / elapsed,
        "p50": statistics.median(ordered) / unit,
        "p99": ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] / unit,
        "unit": {1e-6: "us", 1e-3: "ms"}[unit],
    }


async def timed(name: str, count: int, one: Callable[[int], Awaitable[Any]]) -> dict[str, Any]:
    """``one(i)`` ``count`` times in sequence, in milliseconds."""
    latencies = []
    started = time.perf_counter()
    for i in range(count):
        t = time.perf_counter()
        await one(i)
        latencies.append(time.perf_counter() - t)
    return figures(name, latencies, time.perf_counter() - started, 1e-3)


async def concurrently(
    name: str, count: int, workers: list[Callable[[], Awaitable[Any]]]
) -> dict[str, Any]:
    """``count`` calls shared by ``workers`` running at once (each one its own connection
    or caller), in milliseconds."""
    latencies: list[float] = []
    left = [count]

    async def work(one: Callable[[], Awaitable[Any]]) -> None:
        while left[0] > 0:
            left[0] -= 1
            t = time.perf_counter()
            await one()
            latencies.append(time.perf_counter() - t)

    started = time.perf_counter()
    await asyncio.gather(*(work(one) for one in workers))
    return figures(name, latencies, time.perf_counter() - started, 1e-3)


def cpu_seconds(pid: int) -> float:
    """User and system CPU time process ``pid`` has used (Linux ``/proc``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def checks(client: EntitlementsClient, count: int) -> dict[str, Any]:
    """``count`` in-memory checks, in microseconds (each one timed on its own)."""
    clock = time.perf_counter
    check = client.check
    latencies = [0.0] * count
    started = clock()
    for i in range(count):
        t = clock()
        check("cus_bench", "api_calls", 1)
        latencies[i] = clock() - t
    elapsed = clock() - started
    return figures("client.check", latencies, elapsed, 1e-6)


async def propagation(kv: Any, client: EntitlementsClient, count: int) -> dict[str, Any]:
    """A count written with ``kv.put`` until ``client.check`` answers by it, in ms."""
    key = count_key("cus_prop", "api_calls", Window.DAY, datetime.now(UTC))
    latencies = []
    started = time.perf_counter()
    base = int(time.time() * 1000) % 1_000_000 * 1000  # distinct from any earlier repeat
    for i in range(count):
        used = base + i + 1
        t = time.perf_counter()
        await kv.put(key, json.dumps({"used": used}).encode())
        deadline = t + 10
        while client.check("cus_prop", "api_calls").remaining != LIMIT - used:
            if time.perf_counter() > deadline:
                raise RuntimeError("the client never saw a count written")
            await asyncio.sleep(0)  # let the watcher run; poll again at once
        latencies.append(time.perf_counter() - t)
    return figures("propagation kv.put -> check", latencies, time.perf_counter() - started, 1e-3)


async def hold(client: EntitlementsClient, customer: str, count: int) -> None:
    """Make ``customer`` hold ``count`` reservations (16 at a time)."""
    await client.serve(customer)
    for start in range(0, count, 16):
        batch = range(start, min(count, start + 16))
        answers = await asyncio.gather(*(client.reserve(customer, "api_calls") for _ in batch))
        if not all(a.allowed for a in answers):
            raise RuntimeError("a reservation was refused")


async def run(
    url: str,
    repeats: int,
    count: int,
    ops: int,
    held: list[int],
    functions: dict[str, FunctionProcess],
) -> list[dict[str, Any]]:
    """Every row ``repeats`` times, interleaved; one dict per row and repeat."""
    import nats

    nc = await nats.connect(url)
    js = nc.jetstream()
    counts = (await provision_for_clients(js, ROOMY.model_dump_json().encode()))[Window.DAY]
    client = await EntitlementsClient.connect(url, reservation_ttl=3600)
    for function in functions.values():
        function.start()  # after the tier file: it publishes its own, the same
    try:
        await client.serve("cus_bench")
        await client.serve("cus_prop")
        key = count_key("cus_bench", "api_calls", Window.DAY, datetime.now(UTC))
        await counts.put(key, b'{"used": 1, "last_seq": 1}')
        cas_key = "bench.cas"
        revision = [await counts.put(cas_key, b"0")]
        for n in held:
            await hold(client, f"cus_held_{n}", n)

        async def raw_get(_i: int) -> None:
            await counts.get(key)

        async def raw_update(i: int) -> None:
            revision[0] = await counts.update(cas_key, str(i).encode(), last=revision[0])

        async def reserve(_i: int) -> None:
            if not (await client.reserve("cus_bench", "api_calls")).allowed:
                raise RuntimeError("a reservation was refused")

        def held_reserve(n: int) -> Callable[[], Awaitable[dict[str, Any]]]:
            async def phase() -> dict[str, Any]:
                async def one(_i: int) -> None:
                    if not (await client.reserve(f"cus_held_{n}", "api_calls")).allowed:
                        raise RuntimeError("a reservation was refused")

                return await timed(f"reserve, {n} held", ops, one)

            return phase

        async def check_phase() -> dict[str, Any]:
            return checks(client, count)

        async def get_phase() -> dict[str, Any]:
            return await timed("raw kv.get", ops, raw_get)

        async def update_phase() -> dict[str, Any]:
            return await timed("raw kv.update (CAS)", ops, raw_update)

        async def reserve_phase() -> dict[str, Any]:
            return await timed("client.reserve", ops, reserve)

        async def propagation_phase() -> dict[str, Any]:
            return await propagation(counts, client, max(20, ops // 5))

        async def raw_get_16() -> dict[str, Any]:
            gets = [lambda: counts.get(key)] * CONCURRENCY
            return await concurrently(f"raw kv.get x{CONCURRENCY}", ops, gets)

        check = json.dumps({"customer": "cus_bench", "meter": "api_calls"}).encode()

        def poster(connection: HttpConnection) -> Callable[[], Awaitable[None]]:
            async def post() -> None:
                status, answer = await connection.post(check, {}, "/v1/check")
                if status != 200 or b'"allowed":true' not in answer.replace(b" ", b""):
                    raise RuntimeError(f"/v1/check: HTTP {status} {answer[:200]!r}")

            return post

        def function_16(name: str, function: FunctionProcess) -> Callable[[], Awaitable[Any]]:
            async def phase() -> dict[str, Any]:
                # Connected for each phase: the server closes keep-alive connections idle
                # for 5 s (uvicorn), as long as the other rows can take.
                port = function.port
                connections = [await HttpConnection.open(port) for _ in range(CONCURRENCY)]
                try:
                    # The function's CPU per check: what the load of the machine moves least.
                    assert function.process is not None
                    cpu = cpu_seconds(function.process.pid)
                    found = await concurrently(name, ops, [poster(c) for c in connections])
                    cpu = cpu_seconds(function.process.pid) - cpu
                    return found | {"cpu_us": cpu / found["ops"] * 1e6}
                finally:
                    for connection in connections:
                        connection.close()

            return phase

        rows: list[Callable[[], Awaitable[dict[str, Any]]]] = [get_phase, check_phase]
        rows += [update_phase, reserve_phase, propagation_phase, raw_get_16]
        rows += [function_16(name, function) for name, function in functions.items()]
        rows += [held_reserve(n) for n in held]
        checks(client, min(count, 10_000))  # warm-up
        for function in functions.values():
            await function_16("warm-up", function)()
        results = []
        for repeat in range(repeats):
            for row in rows[repeat % len(rows) :] + rows[: repeat % len(rows)]:
                results.append(await row() | {"repeat": repeat})
        return results
    finally:
        for function in functions.values():
            function.stop()
        await client.close()
        await nc.close()


def summary(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per row: the median of the repeats' rate, p50 and p99, with lowest and highest."""
    names = list(dict.fromkeys(r["name"] for r in results))
    rows = []
    for name in names:
        runs = [r for r in results if r["name"] == name]
        row: dict[str, Any] = {"name": name, "unit": runs[0]["unit"], "ops": runs[0]["ops"]}
        for field in ("rate", "p50", "p99", "cpu_us"):
            values = [r[field] for r in runs if field in r]
            if not values:
                continue
            row[field] = statistics.median(values)
            row[f"{field}_range"] = [min(values), max(values)]
        rows.append(row)
    return rows


def main() -> int:
    """Start nats-server, measure, print."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--checks", type=int, default=200_000, help="checks per phase")
    parser.add_argument("--ops", type=int, default=1000, help="NATS operations per phase")
    parser.add_argument("--held", default="0,1000,10000", help="reservations held, per row")
    parser.add_argument(
        "--against",
        type=Path,
        help="a checkout of another revision: its function is measured too, interleaved",
    )
    parser.add_argument("--json", type=Path, help="write the figures here too")
    args = parser.parse_args()
    held = [int(n) for n in args.held.split(",") if n]
    with tempfile.TemporaryDirectory() as tmp, NatsServer(Path(tmp) / "nats") as server:
        tiers = Path(tmp) / "tiers.json"
        tiers.write_text(ROOMY.model_dump_json())
        env = {"NATS_URL": server.url, "ENTITLEMENTS_TIERS_FILE": str(tiers)}
        name = f"function /v1/check x{CONCURRENCY}"
        functions = {name: FunctionProcess("billing_entitlements", env, Path(tmp), REPO_ROOT)}
        if args.against is not None:
            other = args.against.resolve()
            # Its packages first on the path (this venv's editable installs come after).
            path = ":".join(str(other / d) for d in ("shared", "entitlements", "testing"))
            against = FunctionProcess(
                "billing_entitlements", env | {"PYTHONPATH": path}, Path(tmp), other
            )
            functions[f"{name} @{args.against}"] = against
        results = asyncio.run(run(server.url, args.repeats, args.checks, args.ops, held, functions))
    rows = summary(results)
    print(f"median [lowest-highest] of {args.repeats} interleaved repeats, one process:")
    for row in rows:
        low, high = row["rate_range"]
        unit = row["unit"]
        cpu = ""
        if "cpu_us" in row:
            cpu_low, cpu_high = row["cpu_us_range"]
            cpu = f"   CPU {row['cpu_us']:.0f} us/check [{cpu_low:.0f}-{cpu_high:.0f}]"
        print(
            f"  {row['name']:<28} {row['rate']:>9.0f}/s [{low:.0f}-{high:.0f}]"
            f"   p50 {row['p50']:8.2f} {unit}   p99 {row['p99']:8.2f} {unit}{cpu}"
        )
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "phases": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
