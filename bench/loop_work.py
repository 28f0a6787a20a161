"""What the event loop does per webhook, bridge against the bare server (issue #20).

Run from the repository root: ``.venv/bin/python -m bench.loop_work [--events N]
[--against DIR] [--no-strace] [--json PATH]``.

Starts a nats-server and, each under ``bench/loop_counting.py`` (a loop that counts its
Python-level ``call_soon``, timers, tasks and futures), the bridge's function process
(memory idempotency, INFO logging, as bench_bridge.py starts it), the bare server
(bare_publisher.py, same uvicorn stack) and, with ``--against DIR``, the bridge on another
checkout's ``shared/``. Each is warmed up, then loaded with N events at concurrency 1 and
at 32; the counts of each phase, and (unless ``--no-strace``) its system calls from
``strace -c -f``, are divided by N. At concurrency 1 every request is alone on the loop,
so the figures are the request's own work; at 32 the loop batches (one wake-up serves
several sockets), so syscalls per event fall with load. Counts, not times: strace and the
counting loop slow the process, so no CPU figure is printed. Every process it starts is
stopped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from stripe_bridge.ops.natsserver import NatsServer
from stripe_bridge_testing.processes import FunctionProcess

from bench.bench_bridge import (
    BARE,
    FUNCTION,
    REPO_ROOT,
    function_env,
    http_load,
    payloads,
    provision_stream,
)

CONCURRENCIES = (1, 32)
COUNTER = [sys.executable, "-m", "bench.loop_counting"]
#: System calls shown per event (the rest are summed into "other").
SYSCALLS = ("epoll_pwait", "epoll_wait", "read", "write", "writev", "getpid", "getrandom")


def servers(nats_url: str, against: Path | None) -> dict[str, tuple[dict[str, str], list[str]]]:
    """Row name -> (environment, command) of every server counted."""
    source = str(REPO_ROOT / "functions" / FUNCTION / "main.py")
    bridge = [*COUNTER, "-m", "stripe_bridge.serve", "--source", source]
    rows = {
        "bridge": (function_env(nats_url), bridge),
        "bare": ({"NATS_URL": nats_url}, [*COUNTER, str(BARE)]),
    }
    if against is not None:
        env = function_env(nats_url, PYTHONPATH=str(against.resolve()))
        rows[f"bridge on {against}"] = (env, bridge)
    return rows


def dump_counts(process: subprocess.Popen[bytes], path: Path, serial: int) -> Counter[str]:
    """The child's counts so far (its ``serial``-th dump, asked for with SIGUSR1)."""
    process.send_signal(signal.SIGUSR1)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if path.exists():
            data = json.loads(path.read_text())
            if data["dumps"] >= serial:
                return Counter(data["counts"])
        time.sleep(0.01)  # the child writes on its next bytecode: poll for it
    raise TimeoutError(f"no loop counts from pid {process.pid}")


def strace_start(pid: int, out: Path) -> subprocess.Popen[bytes]:
    """``strace -c -f`` attached to ``pid`` (and its threads) once it says it is attached."""
    trace = subprocess.Popen(
        ["strace", "-c", "-f", "-o", str(out), "-p", str(pid)], stderr=subprocess.PIPE
    )
    assert trace.stderr is not None
    trace.stderr.readline()  # "strace: Process N attached": tracing began
    return trace


def strace_stop(trace: subprocess.Popen[bytes], out: Path) -> Counter[str]:
    """Detach and read the calls per system call from ``strace -c``'s table."""
    trace.send_signal(signal.SIGINT)
    trace.wait(timeout=60)
    calls: Counter[str] = Counter()
    for line in out.read_text().splitlines():
        fields = line.split()
        # % time, seconds, usecs/call, calls, [errors], syscall
        if len(fields) >= 5 and fields[3].isdigit() and fields[-1] != "total":
            calls[fields[-1]] += int(fields[3])
    return calls


def count_row(
    env: dict[str, str], command: list[str], workdir: Path, name: str, events: int, strace: bool
) -> dict[int, Counter[str]]:
    """Per concurrency: loop counts and syscalls of ``events`` webhooks, per event."""
    counts_file = workdir / f"counts-{name.replace('/', '_')}.json"
    env = {**env, "LOOP_COUNTS": str(counts_file)}
    process = FunctionProcess(FUNCTION, env, workdir, REPO_ROOT, command=command)
    results: dict[int, Counter[str]] = {}
    with process:
        assert process.process is not None
        pids = {"function": process.process.pid}
        asyncio.run(http_load("warm-up", process, payloads(300), 8, pids))
        serial = 1
        for concurrency in CONCURRENCIES:
            before = dump_counts(process.process, counts_file, serial)
            trace_out = workdir / f"strace-{serial}.txt"
            trace = strace_start(process.process.pid, trace_out) if strace else None
            items = payloads(events)
            asyncio.run(http_load(name, process, items, concurrency, pids))
            syscalls = strace_stop(trace, trace_out) if trace is not None else Counter()
            after = dump_counts(process.process, counts_file, serial + 1)
            serial += 2
            row = after - before
            for call, number in syscalls.items():
                row[f"syscall {call}"] += number
            results[concurrency] = Counter({k: v / events for k, v in row.items()})
    return results


def print_table(results: dict[str, dict[int, Counter[str]]]) -> None:
    """Per event, every counted kind of loop work: one column per row and concurrency."""
    columns = [(name, c) for name in results for c in CONCURRENCIES]
    keys = sorted({key for per in results.values() for row in per.values() for key in row})
    print(f"{'per event':58}" + "".join(f" {f'{n[:14]} c={c}':>19}" for n, c in columns))

    def cells(select: str | None, exact: str | None = None) -> str:
        out = []
        for name, concurrency in columns:
            row = results[name][concurrency]
            if exact is not None:
                value = row.get(exact, 0.0)
            else:
                assert select is not None
                value = sum(v for k, v in row.items() if k.startswith(select))
            out.append(f" {value:>19.3f}")
        return "".join(out)

    for kind in ("task", "timer", "call_soon", "future", "gc"):
        if kind != "gc":  # the collector's rows are runs and microseconds: no sum
            print(f"{kind + 's (all)':58}" + cells(kind))
        for key in keys:
            if key.startswith(kind):
                print(f"  {key[len(kind) + 1 :][:56]:56}" + cells(None, key))
    shown = [f"syscall {call}" for call in SYSCALLS]
    print(f"{'syscalls (all)':58}" + cells("syscall"))
    for key in shown:
        if key in keys:
            print(f"  {key[8:]:56}" + cells(None, key))
    other = [k for k in keys if k.startswith("syscall") and k not in shown]
    for key in other:
        print(f"  {key[8:]:56}" + cells(None, key))


def main(argv: Sequence[str] | None = None) -> int:
    """Count the loop's work per event for the bridge and the bare server; print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--events", type=int, default=2000, help="events per phase")
    parser.add_argument("--against", type=Path, metavar="DIR", help="another checkout's shared/")
    parser.add_argument("--no-strace", action="store_true", help="loop counts only")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the counts here")
    args = parser.parse_args(argv)
    results: dict[str, dict[int, Counter[str]]] = {}
    with tempfile.TemporaryDirectory(prefix="stripe-bridge-loop-") as tmp:
        workdir = Path(tmp)
        with NatsServer(workdir / "nats") as nats_server:
            asyncio.run(provision_stream(nats_server.url))
            for name, (env, command) in servers(nats_server.url, args.against).items():
                results[name] = count_row(
                    env, command, workdir, name, args.events, not args.no_strace
                )
    print(f"Event-loop work per event, {args.events} events per phase", end="")
    print(f" (load average {os.getloadavg()[0]:.1f}):")
    print_table(results)
    if args.json is not None:
        per_event = {name: {str(c): row for c, row in per.items()} for name, per in results.items()}
        args.json.write_text(json.dumps(per_event, indent=1, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
