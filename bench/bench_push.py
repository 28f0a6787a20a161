"""Cost of pushing metrics to a Pushgateway, beside a function that does not push.

Run from the repository root: ``.venv/bin/python -m bench.bench_push [--quick]``.

Phases, each at concurrency 1 and 32 against one function process (``invoice_paid``,
memory idempotency, as ``stripe-bridge serve`` runs it): no ``PUSHGATEWAY_URL`` (the
baseline), a real Pushgateway with ``PUSHGATEWAY_MIN_INTERVAL=5`` (the default is 15), the same
pushing as often as it can (interval 0: a push starts as soon as the previous one ends),
and a Pushgateway that accepts connections and never answers (interval 0, every push waits
for its 2 s timeout in a worker thread). Figures are printed, never judged.
"""

from __future__ import annotations

import argparse
import tempfile
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path

from stripe_bridge.ops.natsserver import NatsServer
from stripe_bridge_testing.processes import BlackHoleServer, FunctionProcess, PushgatewayServer

from bench.bench_bridge import FUNCTION, REPO_ROOT, Load, function_env, function_loads
from bench.bench_bridge import provision_stream as provision


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="fewer events (smoke run)")
    parser.add_argument("--events", type=int, help="events per concurrency-32 phase")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Measure every phase and print one table."""
    import asyncio

    args = parse_args(argv)
    events = args.events or (500 if args.quick else 3000)
    counts = {1: max(100, events // 5), 32: events}
    rows: list[tuple[str, Load]] = []
    with ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-push-")))
        nats = NatsServer(workdir / "nats").start()
        stack.callback(nats.stop)
        asyncio.run(provision(nats.url))
        pushgateway = stack.enter_context(PushgatewayServer(workdir / "pushgateway"))
        hung = stack.enter_context(BlackHoleServer())
        phases = {
            "no Pushgateway (baseline)": {},
            "Pushgateway, interval 5 s": {
                "PUSHGATEWAY_URL": pushgateway.url,
                "PUSHGATEWAY_MIN_INTERVAL": "5",
            },
            "Pushgateway, interval 0": {
                "PUSHGATEWAY_URL": pushgateway.url,
                "PUSHGATEWAY_MIN_INTERVAL": "0",
            },
            "Pushgateway hung, interval 0": {
                "PUSHGATEWAY_URL": hung.url,
                "PUSHGATEWAY_MIN_INTERVAL": "0",
            },
        }
        assert nats.process is not None
        for name, extra in phases.items():
            env = function_env(nats.url, **extra)
            with FunctionProcess(FUNCTION, env, workdir / "functions", REPO_ROOT) as function:
                loads, _ = function_loads(name, function, counts, 200, nats.process.pid)
            rows += [(name, load) for load in loads]
    baseline = {load.concurrency: load.rate for name, load in rows if "baseline" in name}
    print(f"{'phase':32} {'conc':>4} {'events/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'% base':>7}")
    for name, load in rows:
        share = load.rate / baseline[load.concurrency] * 100
        print(
            f"{name:32} {load.concurrency:>4} {load.rate:>9.0f} {load.percentile(50):>8.2f} "
            f"{load.percentile(99):>8.2f} {share:>6.0f}%"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
