"""CPU per webhook of one function: the .venv process against the image, variant by variant.

Why does a webhook cost 1.7-2.0 ms of CPU on the staging stack (bench_month_end) against
0.25-0.4 ms in bench_bridge? Each variant starts ``invoice_paid`` afresh (the image under
podman with ``--network host``, or ``stripe-bridge serve`` from the .venv), measures its
idle CPU for a few seconds, sends signed events, and divides the CPU it used (the
container's cgroup ``usage_usec``, the process's /proc stat) by the events: as measured,
and net of the idle rate. One nats-server and one redis-server on loopback serve all.

    .venv/bin/python -m bench.bench_webhook_cpu [--events 1500] [--paced-seconds 15]

Needs the image (``scripts/image``) and podman (``scripts/podman``); takes ~3 minutes.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

from stripe_bridge.ops.natsserver import NatsServer, free_port
from stripe_bridge_testing.podman import podman
from stripe_bridge_testing.processes import FunctionProcess, RedisServer
from stripe_bridge_testing.repo import REPO_ROOT
from stripe_bridge_testing.waiting import wait_until

from .bench_bridge import (
    FUNCTION,
    HttpConnection,
    cpu_seconds,
    function_env,
    payloads,
    provision_stream,
)
from .cgroup_stats import Cgroup

IMAGE = "localhost/stripe-bridge:0.1.0"
IDLE_SECONDS = 5.0


@dataclass(frozen=True)
class Variant:
    """One way of running and driving the function."""

    name: str
    image: bool
    #: Extra environment (idempotency backend, log level).
    env: dict[str, str]
    #: Events per second, or None: as fast as ``concurrency`` connections go.
    rate: float | None = None
    concurrency: int = 8
    #: A new TCP connection for every request (no keep-alive).
    reconnect: bool = False
    cpus: str | None = None


@dataclass(frozen=True)
class Result:
    """What one variant cost."""

    variant: Variant
    events: int
    seconds: float
    cpu: float
    idle_cores: float

    def per_event_ms(self, net: bool) -> float:
        """CPU per event in ms; ``net``: less the idle rate over the load's duration."""
        cpu = self.cpu - (self.idle_cores * self.seconds if net else 0.0)
        return 1000 * cpu / self.events


@contextmanager
def running(
    variant: Variant, env: dict[str, str], workdir: Path
) -> Iterator[tuple[int, Callable[[], float]]]:
    """The function of ``variant``: its port and a reader of its CPU seconds so far."""
    port = free_port()
    if not variant.image:
        with FunctionProcess(FUNCTION, env, workdir, REPO_ROOT, port=port) as process:
            assert process.process is not None
            pid = process.process.pid
            yield port, lambda: cpu_seconds(pid)
        return
    options = ["--network", "host", "--env", f"PORT={port}", "--env", "HOST=127.0.0.1"]
    options += ["--env", f"FUNCTION_SOURCE=/app/functions/{FUNCTION}/main.py"]
    for key, value in env.items():
        options += ["--env", f"{key}={value}"]
    if variant.cpus:
        options += ["--cpus", variant.cpus]
    name = f"bench-webhook-cpu-{port}"
    podman("run", "--detach", "--rm", "--name", name, *options, IMAGE)
    try:
        group = Cgroup(podman("inspect", "--format", "{{.State.CgroupPath}}", name))
        yield port, group.cpu_seconds
    finally:
        podman("stop", "--time", "10", name, check=False)


def ready(port: int) -> bool:
    """Whether the function answers /readyz 200 (NATS connected, stream there)."""
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as answer:
            return bool(answer.status == 200)
    except OSError:
        return False


async def send(variant: Variant, port: int, items: Sequence[tuple[bytes, dict[str, str]]]) -> None:
    """POST every item, paced at ``variant.rate`` or as fast as the connections go."""
    pending = iter(items)
    start = time.monotonic()
    sent = 0

    async def worker() -> None:
        nonlocal sent
        connection = None
        for body, headers in pending:
            if variant.rate:
                await asyncio.sleep(max(0.0, start + sent / variant.rate - time.monotonic()))
            sent += 1
            if connection is None or variant.reconnect:
                if connection is not None:
                    connection.close()
                connection = await HttpConnection.open(port)
            status, answer = await connection.post(body, headers)
            if status != 200:
                raise RuntimeError(f"{variant.name}: HTTP {status} {answer[:200]!r}")
        if connection is not None:
            connection.close()

    await asyncio.gather(*(worker() for _ in range(1 if variant.rate else variant.concurrency)))


def measure(variant: Variant, count: int, env: dict[str, str], workdir: Path) -> Result:
    """Start the function, read its idle rate, warm it up, then time ``count`` events."""
    with running(variant, env, workdir) as (port, cpu):
        wait_until(lambda: ready(port), 60, f"{variant.name} ready")
        asyncio.run(send(Variant("warm-up", False, {}), port, payloads(200)))
        idle_start, idle_cpu = time.monotonic(), cpu()
        time.sleep(IDLE_SECONDS)
        idle = (cpu() - idle_cpu) / (time.monotonic() - idle_start)
        items = payloads(count)
        started, before = time.monotonic(), cpu()
        asyncio.run(send(variant, port, items))
        seconds = time.monotonic() - started
        return Result(variant, count, seconds, cpu() - before, idle)


def variants() -> list[Variant]:
    """From bench_bridge's setup to the staging stack's, one difference at a time."""
    redis = {"IDEMPOTENCY_BACKEND": "redis"}
    return [
        Variant(".venv process, memory idempotency (bench_bridge)", False, {}),
        Variant("image, memory idempotency", True, {}),
        Variant("image, redis idempotency", True, redis),
        Variant("image, redis, --cpus 0.5 (the manifest's limit)", True, redis, cpus="0.5"),
        Variant("image, redis, 300 events/s", True, redis, rate=300),
        Variant("image, redis, 100 events/s", True, redis, rate=100),
        Variant("image, redis, 20 events/s", True, redis, rate=20),
        Variant("image, redis, 20 events/s, DEBUG", True, {**redis, "LOG_LEVEL": "DEBUG"}, rate=20),
        Variant("image, redis, 20/s, new connection each", True, redis, rate=20, reconnect=True),
        Variant(".venv process, redis, 20 events/s", False, redis, rate=20),
    ]  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    """Run every variant and print a Markdown table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--events", type=int, default=1500, help="events per unpaced variant")
    parser.add_argument("--paced-seconds", type=float, default=15.0, help="length of a paced one")
    args = parser.parse_args(argv)
    with ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        nats = stack.enter_context(NatsServer(workdir / "nats"))
        redis = stack.enter_context(RedisServer(workdir / "redis"))
        asyncio.run(provision_stream(nats.url))
        print("| variant | events | events/s | CPU per event | net of idle | idle cores |")
        print("| --- | --- | --- | --- | --- | --- |")
        for variant in variants():
            env = function_env(nats.url, REDIS_URL=redis.url, **variant.env)
            count = int(variant.rate * args.paced_seconds) if variant.rate else args.events
            r = measure(variant, count, env, workdir)
            print(
                f"| {variant.name} | {r.events} | {r.events / r.seconds:,.0f} "
                f"| {r.per_event_ms(False):.2f} ms | {r.per_event_ms(True):.2f} ms "
                f"| {r.idle_cores:.4f} |",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
