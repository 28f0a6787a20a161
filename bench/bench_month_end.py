"""The month-end burst (issue #20), end to end on the podman staging stack.

Run from the repository root: ``.venv/bin/python -m bench.bench_month_end [--events N]
[--rate R] [--usage-factor F] [--usage-batch B] [--openmeter-rate-limit Q]
[--max-seconds S] [--drain-seconds D] [--idle-seconds I] [--max-inflight N]
[--log-level LEVEL] [--json out.json]``.

It starts the staging stack of testing/stripe_bridge_testing/staging.py (3 NATS containers with the
StatefulSet's nats.conf, Redis, the Pushgateway, the webhook functions of the mix and
billing-usage, every Deployment of knative/staging/consumers.yaml with the manifest's
settings, the OpenMeter stand-in answering 429 with Retry-After over
``--openmeter-rate-limit`` requests per second), then:

1. sends a bounded, open-loop burst: ``--events`` signed Stripe events of the month-end mix
   (bench/month_end_mix.py) at ``--rate`` per second and ``--usage-factor`` usage records
   per event, posted to billing-usage in batches of ``--usage-batch`` spread over the same
   time; a 5xx or a broken connection is retried like Stripe does (same event, new
   signature); sending stops at ``--max-seconds`` whatever is left;
2. samples every second, until every consumer has drained (or ``--drain-seconds``): each
   JetStream consumer's lag (num_pending + num_ack_pending) and every container's CPU time
   and RSS (cgroup files);
3. checks exactly once: every acknowledged Stripe event id once in STRIPE, every usage
   record and every expected lifecycle event once in USAGE and once at OpenMeter, nothing
   else, no dead letters;
4. prints the figures (``--json``: also as JSON). Exit code 0 only if everything drained
   and nothing was lost, duplicated, refused, dead-lettered or retried before its
   Retry-After.

Every container and the network are removed at the end, on success, failure or SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import secrets
import signal
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stripe_bridge.billing.lifecycle import LIFECYCLE_SOURCE
from stripe_bridge.billing.usage import DEFAULT_SOURCE
from stripe_bridge.signature import sign_header
from stripe_bridge.streams import USAGE_DLQ, USAGE_STREAM
from stripe_bridge_events.deadletter import DEAD_LETTER_STREAM

# The container harness (stripe_bridge_testing, its staging stack among it): bench/
# imports it here and nowhere else.
from stripe_bridge_testing.container_specs import deployments
from stripe_bridge_testing.podman import podman
from stripe_bridge_testing.staging import ENVIRONMENT, USAGE_SERVICE, Staging

from .bench_bridge import HttpConnection, percentile
from .cgroup_stats import Cgroup
from .month_end_mix import MIX, StripeEvents, schedule, services, usage_batch

STREAM = "STRIPE"
#: How long one delivery is retried (Stripe retries for days; a bench run is minutes).
RETRY_SECONDS = 120.0
RETRY_PAUSE = 1.0
#: A request that takes longer is abandoned and retried, as Stripe does when it times out.
REQUEST_TIMEOUT = 30.0
#: uvicorn closes a keep-alive connection idle for 5 s; never reuse one idle this long.
IDLE_SECONDS = 2.0
SAMPLE_SECONDS = 1.0


# -- sending ------------------------------------------------------------------------------


class Pool:
    """Keep-alive connections to one published port, opened on demand."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.idle: list[tuple[float, HttpConnection]] = []

    async def post(self, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
        """POST ``body`` to ``/``; a broken or timed-out connection raises and is closed."""
        now = time.monotonic()
        connection = None
        while self.idle and connection is None:
            used, candidate = self.idle.pop()
            if now - used < IDLE_SECONDS:
                connection = candidate
            else:
                candidate.close()
        if connection is None:
            connection = await HttpConnection.open(self.port)
        try:
            answer = await asyncio.wait_for(connection.post(body, headers), REQUEST_TIMEOUT)
        except BaseException:
            connection.close()
            raise
        self.idle.append((time.monotonic(), connection))
        return answer

    def close(self) -> None:
        """Close every idle connection."""
        for _, connection in self.idle:
            connection.close()
        self.idle.clear()


@dataclass
class Sent:
    """What the sender did and what it was answered."""

    latencies: dict[str, list[float]] = field(default_factory=lambda: {"stripe": [], "usage": []})
    statuses: Counter[str] = field(default_factory=Counter)
    retries: int = 0
    refused: list[str] = field(default_factory=list)  # a 4xx: the bench or the bridge is wrong
    gave_up: list[str] = field(default_factory=list)
    stripe_ids: list[str] = field(default_factory=list)  # acknowledged
    usage_ids: list[str] = field(default_factory=list)  # acknowledged
    #: What OpenMeter must get for the acknowledged Stripe events (month_end_mix).
    lifecycle_ids: set[str] = field(default_factory=set)
    #: Wall-clock time of the first attempt: lifecycle id -> its Stripe event's, usage
    #: record id -> its batch's (the start of webhook -> OpenMeter).
    first_sent: dict[str, float] = field(default_factory=dict)
    started: float = 0.0
    stripe_done: float = 0.0  # monotonic time of the last Stripe acknowledgement
    usage_done: float = 0.0
    behind: float = 0.0  # the most the sender fell behind its schedule, s
    unsent: int = 0  # events and batches not sent within --max-seconds


async def deliver(
    pool: Pool,
    kind: str,
    body: bytes,
    headers: Callable[[], dict[str, str]],
    ok: int,
    sent: Sent,
    what: str,
) -> bool:
    """POST until answered ``ok``; retry 5xx and broken connections, never a 4xx."""
    deadline = time.monotonic() + RETRY_SECONDS
    while True:
        started = time.perf_counter()
        try:
            status, answer = await pool.post(body, headers())
        except (OSError, asyncio.IncompleteReadError, TimeoutError):
            status, answer = 0, b""
        else:
            sent.latencies[kind].append(time.perf_counter() - started)
        sent.statuses[f"{kind} {status}"] += 1
        if status == ok:
            return True
        if 400 <= status < 500:
            sent.refused.append(f"{what}: {status} {answer[:200]!r}")
            return False
        if time.monotonic() > deadline:
            sent.gave_up.append(f"{what}: last status {status}")
            return False
        sent.retries += 1
        await asyncio.sleep(RETRY_PAUSE)  # Stripe's back-off, compressed


@dataclass(frozen=True)
class Burst:
    """The burst's shape, from the command line."""

    events: int
    rate: float
    usage_factor: int
    usage_batch: int
    max_seconds: float
    max_inflight: int
    seed: int

    @property
    def usage_records(self) -> int:
        """Usage records in the whole burst."""
        return self.events * self.usage_factor

    @property
    def batches(self) -> int:
        """Usage POSTs in the whole burst."""
        return -(-self.usage_records // self.usage_batch)


async def send_burst(staging: Staging, burst: Burst, run: str) -> Sent:
    """The open-loop sender: each item at its time, at most ``max_inflight`` in flight."""
    sent = Sent()
    events = StripeEvents(burst.seed)
    pools: dict[str, Pool] = {}

    def pool(service: str) -> Pool:
        if service not in pools:
            pools[service] = Pool(staging.ports[service])
        return pools[service]

    token = staging.secret("stripe-bridge-billing", "usage-api-token")
    usage_headers = {"Authorization": f"Bearer {token}"}

    async def stripe() -> None:
        delivery = events.next()
        now = time.time()
        for lifecycle_id in delivery.lifecycle:
            sent.first_sent.setdefault(lifecycle_id, now)
        secret = staging.secret("stripe-bridge-webhook-secrets", delivery.function).encode()

        def headers() -> dict[str, str]:
            return {"Stripe-Signature": sign_header(secret, delivery.body)}

        if await deliver(
            pool(delivery.service), "stripe", delivery.body, headers, 200, sent, delivery.event_id
        ):
            sent.stripe_ids.append(delivery.event_id)
            sent.lifecycle_ids.update(delivery.lifecycle)
            sent.stripe_done = time.monotonic()

    async def usage(index: int) -> None:
        first = index * burst.usage_batch
        ids, body = usage_batch(run, first, min(burst.usage_batch, burst.usage_records - first))
        now = time.time()
        for record_id in ids:
            sent.first_sent[record_id] = now
        if await deliver(
            pool(USAGE_SERVICE), "usage", body, lambda: usage_headers, 202, sent, ids[0]
        ):
            sent.usage_ids.extend(ids)
            sent.usage_done = time.monotonic()

    loop = asyncio.get_running_loop()
    inflight = asyncio.Semaphore(burst.max_inflight)
    tasks: set[asyncio.Task[None]] = set()

    def finished(task: asyncio.Task[None]) -> None:
        tasks.discard(task)
        inflight.release()

    items = schedule(burst.events, burst.batches, burst.rate)
    start = sent.started = loop.time()
    for done, (due, what) in enumerate(items):
        if loop.time() - start > burst.max_seconds:
            sent.unsent = burst.events + burst.batches - done
            break
        wait = start + due - loop.time()
        if wait > 0:
            await asyncio.sleep(wait)  # the open loop's clock, not a synchronisation
        await inflight.acquire()
        sent.behind = max(sent.behind, loop.time() - start - due)
        task = asyncio.create_task(stripe() if what < 0 else usage(what))
        tasks.add(task)
        task.add_done_callback(finished)
    while tasks:
        await asyncio.gather(*list(tasks))
    for each in pools.values():
        each.close()
    return sent


# -- sampling -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Sample:
    """One look at the stack: consumer lags, CPU seconds and RSS bytes per container."""

    at: float  # monotonic
    lags: dict[str, int]
    cpu: dict[str, float]
    rss: dict[str, int]


async def consumer_lags(js: Any, streams: tuple[str, ...]) -> dict[str, int]:
    """``stream/durable`` -> messages not yet acknowledged (pending + ack pending).

    An ephemeral consumer (count-usage reads USAGE with one) is named by its filter.
    """
    lags = {}
    for stream in streams:
        for info in await js.consumers_info(stream):
            name = info.config.durable_name or f"ephemeral {info.config.filter_subject}"
            lags[f"{stream}/{name}"] = info.num_pending + info.num_ack_pending
    return lags


class Sampler:
    """Samples every ``SAMPLE_SECONDS`` in the sender's event loop until stopped."""

    def __init__(self, js: Any, cgroups: dict[str, Cgroup]) -> None:
        self.js = js
        self.cgroups = cgroups
        self.samples: list[Sample] = []
        self.stopped = asyncio.Event()

    async def sample(self) -> Sample:
        """Take one sample (and keep it)."""
        lags = await consumer_lags(self.js, (STREAM, USAGE_STREAM))
        cpu = {name: group.cpu_seconds() for name, group in self.cgroups.items()}
        rss = {name: group.rss_bytes() for name, group in self.cgroups.items()}
        taken = Sample(time.monotonic(), lags, cpu, rss)
        self.samples.append(taken)
        return taken

    async def run(self) -> None:
        """Sample until ``stopped`` is set."""
        while not self.stopped.is_set():
            await self.sample()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopped.wait(), SAMPLE_SECONDS)


def cgroups_of(staging: Staging) -> dict[str, Cgroup]:
    """Every running container of the stack (short name) -> its cgroup."""
    out = {}
    prefix = staging.stack.prefix + "-"
    for container in staging.stack.started:
        state = podman(
            "inspect", "--format", "{{.State.Status}} {{.State.CgroupPath}}", container.name
        )
        status, _, path = state.partition(" ")
        if status == "running":
            out[container.name.removeprefix(prefix)] = Cgroup(path)
    return out


# -- the exactly-once check -----------------------------------------------------------------


async def stored_ids(js: Any, stream: str) -> Counter[str]:
    """``Nats-Msg-Id`` -> how many messages of ``stream`` carry it (headers only)."""
    from nats.js.api import AckPolicy, ConsumerConfig

    info = await js.stream_info(stream)
    name = "bench-count-" + secrets.token_hex(4)
    config = ConsumerConfig(
        durable_name=name, ack_policy=AckPolicy.NONE, headers_only=True, inactive_threshold=120
    )
    await js.add_consumer(stream, config)
    counts: Counter[str] = Counter()
    try:
        subscription = await js.pull_subscribe_bind(name, stream)
        seen = 0
        while seen < info.state.messages:
            for message in await subscription.fetch(1000, timeout=10):
                counts[(message.headers or {}).get("Nats-Msg-Id", "")] += 1
                seen += 1
        await subscription.unsubscribe()
    finally:
        await js.delete_consumer(stream, name)
    return counts


async def stored_count(js: Any, stream: str) -> int:
    """Messages in ``stream``; 0 if it was never created (dead-letter streams are made on
    first use)."""
    from nats.js.errors import NotFoundError

    try:
        return int((await js.stream_info(stream)).state.messages)
    except NotFoundError:
        return 0


def exactly_once(expected: set[str], counts: Counter[str]) -> dict[str, Any]:
    """Lost, duplicated and unexpected ids of ``counts`` against ``expected``."""
    lost = sorted(expected - set(counts))
    duplicated = sorted(i for i in expected if counts[i] > 1)
    unexpected = sorted(set(counts) - expected)
    return {
        "expected": len(expected),
        "once": sum(1 for i in expected if counts[i] == 1),
        "lost": len(lost),
        "duplicated": len(duplicated),
        "unexpected": len(unexpected),
        "examples": (lost + duplicated + unexpected)[:5],
    }


def control(staging: Staging, path: str) -> Any:
    """GET the OpenMeter stand-in's control port."""
    url = staging.url("openmeter-control") + path
    with urllib.request.urlopen(url, timeout=60) as response:
        return json.load(response)


# -- figures ------------------------------------------------------------------------------


def distribution(values: list[float], scale: float = 1.0) -> dict[str, float | None]:
    """p50, p99 and max of ``values`` times ``scale`` (None without values)."""
    if not values:
        return {"p50": None, "p99": None, "max": None}
    return {
        "p50": percentile(values, 50) * scale,
        "p99": percentile(values, 99) * scale,
        "max": max(values) * scale,
    }


def lag_figures(samples: list[Sample], burst_start: float, burst_end: float) -> dict[str, Any]:
    """Per consumer: peak lag, when (s after the burst started) and when it drained to 0
    for good (s after the last item was acknowledged; None if it never did)."""
    out = {}
    for name in sorted({n for s in samples for n in s.lags}):
        series = [(s.at, s.lags.get(name, 0)) for s in samples]
        peak_at, peak = max(series, key=lambda point: point[1])
        busy = [i for i, (_, lag) in enumerate(series) if lag > 0]
        drained: float | None = 0.0
        if busy and busy[-1] == len(series) - 1:
            drained = None
        elif busy:
            drained = max(0.0, series[busy[-1] + 1][0] - burst_end)
        out[name] = {"peak": peak, "peak_at": peak_at - burst_start, "drained_after": drained}
    return out


def cores(a: Sample, b: Sample, name: str) -> float:
    """CPU cores ``name`` used on average between samples ``a`` and ``b``."""
    return (b.cpu[name] - a.cpu[name]) / (b.at - a.at) if b.at > a.at else 0.0


def resource_figures(samples: list[Sample], idle: tuple[Sample, Sample]) -> dict[str, Any]:
    """Per container: CPU (cores) while idle, mean and peak over the burst and drain, CPU
    seconds in all, and peak and last RSS (MiB)."""
    first, last = samples[0], samples[-1]
    wall = last.at - first.at
    out = {}
    for name in sorted(first.cpu):
        peaks = [cores(a, b, name) for a, b in itertools.pairwise(samples)]
        out[name] = {
            "cpu_idle": cores(*idle, name),
            "cpu_seconds": last.cpu[name] - first.cpu[name],
            "cpu_mean": (last.cpu[name] - first.cpu[name]) / wall if wall else 0.0,
            "cpu_peak": max(peaks, default=0.0),
            "rss_peak_mib": max(s.rss[name] for s in samples) / 2**20,
            "rss_last_mib": last.rss[name] / 2**20,
        }
    return out


# -- the run --------------------------------------------------------------------------------


async def wait_drained(
    staging: Staging, sampler: Sampler, at_openmeter: int, seconds: float
) -> bool:
    """Whether, within ``seconds``, every consumer's lag was 0 in the latest sample and the
    OpenMeter stand-in had ingested ``at_openmeter`` distinct events."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        stats = await asyncio.to_thread(control, staging, "/stats")
        if stats["ingested"] >= at_openmeter and not any(sampler.samples[-1].lags.values()):
            return True
        await asyncio.sleep(SAMPLE_SECONDS)  # polling pace; the deadline bounds it
    return False


async def measure(
    staging: Staging, burst: Burst, drain_seconds: float, idle_seconds: float
) -> dict[str, Any]:
    """Send the burst while sampling, wait for the drain, check exactly once; the figures."""
    import nats

    run = secrets.token_hex(3)
    nc = await nats.connect(staging.nats_url())
    try:
        js = nc.jetstream(timeout=30)
        sampler = Sampler(js, cgroups_of(staging))
        idle = await sampler.sample()
        await asyncio.sleep(idle_seconds)  # the measurement window of the idle stack
        idle_end = await sampler.sample()
        sampler.samples[:] = [idle_end]
        sampling = asyncio.create_task(sampler.run())
        client_cpu = time.process_time()
        load_before = os.getloadavg()
        sent = await send_burst(staging, burst, run)
        burst_end = time.monotonic()
        client_cpu = time.process_time() - client_cpu
        lifecycle = sent.lifecycle_ids
        expected = len(sent.usage_ids) + len(lifecycle)
        drained = await wait_drained(staging, sampler, expected, drain_seconds)
        sampler.stopped.set()
        await sampling
        await sampler.sample()
        drain_end = time.monotonic()
        load_after = os.getloadavg()
        stripe_counts = await stored_ids(js, STREAM)
        usage_counts = await stored_ids(js, USAGE_STREAM)
        dead = {
            stream: await stored_count(js, stream) for stream in (DEAD_LETTER_STREAM, USAGE_DLQ)
        }
        stored_bytes = {
            stream: (await js.stream_info(stream)).state.bytes for stream in (STREAM, USAGE_STREAM)
        }
    finally:
        await nc.close()
    accepted = await asyncio.to_thread(control, staging, "/accepted")
    stats = await asyncio.to_thread(control, staging, "/stats")
    at_openmeter: Counter[str] = Counter()
    first_ingested: dict[str, float] = {}
    wrong_source = []
    for record_id, source, count, first in accepted:
        at_openmeter[record_id] += count
        first_ingested[record_id] = first
        if source != (LIFECYCLE_SOURCE if record_id in lifecycle else DEFAULT_SOURCE):
            wrong_source.append(record_id)
    usage_ids = set(sent.usage_ids)
    delays = {
        kind: [first_ingested[i] - sent.first_sent[i] for i in ids if i in first_ingested]
        for kind, ids in (("usage", usage_ids), ("lifecycle", lifecycle))
    }
    samples = sampler.samples
    return {
        "burst": burst.__dict__,
        "mix": MIX,
        "openmeter_rate_limit": staging.openmeter_rate_limit,
        "log_level": staging.log_level or "the manifests'",
        "sent": {
            "stripe_events": len(sent.stripe_ids),
            "usage_records": len(sent.usage_ids),
            "unsent": sent.unsent,
            "behind_schedule_s": sent.behind,
            "retries": sent.retries,
            "refused": sent.refused[:5],
            "refused_count": len(sent.refused),
            "gave_up": len(sent.gave_up),
            "statuses": dict(sent.statuses),
            "client_cpu_cores": client_cpu / (burst_end - sent.started),
        },
        "accepted_per_s": {
            "stripe_events": len(sent.stripe_ids) / max(1e-9, sent.stripe_done - sent.started),
            "usage_records": len(sent.usage_ids) / max(1e-9, sent.usage_done - sent.started),
        },
        "webhook_latency_ms": {
            kind: distribution(values, 1000) for kind, values in sent.latencies.items()
        },
        "webhook_to_openmeter_s": {kind: distribution(v) for kind, v in delays.items()},
        "drained": drained,
        "burst_seconds": burst_end - sent.started,
        "drain_seconds": drain_end - burst_end,
        "lag": lag_figures(samples, sent.started, burst_end),
        "containers": resource_figures(samples, (idle, idle_end)),
        "idle_seconds": idle_seconds,
        "openmeter": {
            "statuses": stats["statuses"],
            "rate_limited_429": int(stats["statuses"].get("429", 0)),
            "early_retries": stats["early_retries"],
            "wrong_source": len(wrong_source),
        },
        "exactly_once": {
            "STRIPE": exactly_once(set(sent.stripe_ids), stripe_counts),
            "USAGE": exactly_once(usage_ids | lifecycle, usage_counts),
            "openmeter": exactly_once(usage_ids | lifecycle, at_openmeter),
            "dead_letters": dead,
        },
        "stream_bytes": stored_bytes,
        "bytes_per_message": {
            STREAM: stored_bytes[STREAM] / max(1, len(sent.stripe_ids)),
            USAGE_STREAM: stored_bytes[USAGE_STREAM] / max(1, len(usage_ids | lifecycle)),
        },
        "load_average": {"before": load_before[0], "after": load_after[0]},
        "cpus": os.cpu_count(),
    }


def cpu_per_item(f: dict[str, Any]) -> dict[str, float | None]:
    """CPU milliseconds per unit of work, by part of the stack: what the sizing table
    (docs/deploy.md) scales from."""
    use = f["containers"]
    stripe = f["sent"]["stripe_events"]
    usage = f["sent"]["usage_records"]
    to_openmeter = f["exactly_once"]["openmeter"]["expected"]
    stored = stripe + f["exactly_once"]["USAGE"]["expected"]

    def cost(prefix: str, items: int) -> float | None:
        seconds = sum(u["cpu_seconds"] for name, u in use.items() if name.startswith(prefix))
        return seconds * 1000 / items if items else None

    return {
        "webhook functions, per Stripe event": cost("stripe-", stripe),
        "billing-usage, per usage record": cost("billing-usage", usage),
        "NATS (3 nodes together), per stored message": cost("nats-", stored),
        "forward-openmeter, per event to OpenMeter": cost("forward-openmeter", to_openmeter),
        "project-tiers, per Stripe event": cost("project-tiers", stripe),
        "project-lifecycle, per Stripe event": cost("project-lifecycle", stripe),
        "count-usage, per usage record": cost("count-usage", usage),
    }


def _ms(figures: dict[str, float | None], unit: str = "") -> str:
    return " ".join(
        f"{k} {'-' if v is None else format(v, '.1f' if unit == 'ms' else '.2f')}"
        for k, v in figures.items()
    )


def print_report(f: dict[str, Any]) -> None:
    """The figures as text."""
    b, sent = f["burst"], f["sent"]
    print(
        f"month-end burst: {b['events']:,} Stripe events at {b['rate']:g}/s "
        f"+ {b['usage_factor']} usage records per event in batches of {b['usage_batch']}; "
        f"OpenMeter stand-in limit {f['openmeter_rate_limit'] or 'none'} requests/s; "
        f"LOG_LEVEL {f['log_level']}"
    )
    print(
        f"sent {sent['stripe_events']:,} events and {sent['usage_records']:,} usage records "
        f"in {f['burst_seconds']:.1f} s ({sent['unsent']} items unsent at --max-seconds); "
        f"the sender fell behind its schedule by up to {sent['behind_schedule_s']:.2f} s and "
        f"used {sent['client_cpu_cores']:.2f} cores"
    )
    print(
        f"machine: {f['cpus']} CPUs, load average {f['load_average']['before']:.1f} before, "
        f"{f['load_average']['after']:.1f} after"
    )
    rate = f["accepted_per_s"]
    print(
        f"accepted: {rate['stripe_events']:.1f} Stripe events/s, {rate['usage_records']:.1f} "
        f"usage records/s; {sent['retries']} retries, {sent['refused_count']} refused, "
        f"{sent['gave_up']} given up; answers {sent['statuses']}"
    )
    for kind, figures in f["webhook_latency_ms"].items():
        print(f"webhook latency, {kind:9} ms: {_ms(figures, 'ms')}")
    for kind, figures in f["webhook_to_openmeter_s"].items():
        print(f"webhook -> OpenMeter, {kind:9} s: {_ms(figures)}")
    om = f["openmeter"]
    print(
        f"OpenMeter: answers {om['statuses']}; {om['rate_limited_429']} 429s, "
        f"{om['early_retries']} retried before their Retry-After"
    )
    drained = "drained" if f["drained"] else "NOT DRAINED"
    print(
        f"consumer lag (pending + ack pending), {drained} {f['drain_seconds']:.1f} s "
        "after the burst:"
    )
    for name, lag in f["lag"].items():
        after = lag["drained_after"]
        print(
            f"  {name:28} peak {lag['peak']:>8,} at {lag['peak_at']:6.1f} s; drained "
            + ("never" if after is None else f"{after:.1f} s after the burst")
        )
    print(
        f"per container: CPU cores idle ({f['idle_seconds']:g} s before) / mean over burst and "
        "drain / peak (1 s); CPU s; RSS MiB peak / last:"
    )
    for name, use in f["containers"].items():
        print(
            f"  {name:44} {use['cpu_idle']:5.3f} / {use['cpu_mean']:5.2f} / "
            f"{use['cpu_peak']:5.2f}  {use['cpu_seconds']:7.1f}  "
            f"{use['rss_peak_mib']:6.1f} / {use['rss_last_mib']:6.1f}"
        )
    print("CPU ms per item:")
    for part, ms in f["cpu_ms_per_item"].items():
        print(f"  {part:48} {'-' if ms is None else format(ms, '.3f')}")
    once = f["exactly_once"]
    for where in ("STRIPE", "USAGE", "openmeter"):
        c = once[where]
        print(
            f"exactly once, {where:9}: {c['once']:,}/{c['expected']:,} once, {c['lost']} lost, "
            f"{c['duplicated']} duplicated, {c['unexpected']} unexpected {c['examples'] or ''}"
        )
    print(f"dead letters: {once['dead_letters']}")
    print(
        "stored (one replica): "
        + ", ".join(
            f"{stream} {f['stream_bytes'][stream] / 2**20:.1f} MiB, {size:.0f} B per message"
            for stream, size in f["bytes_per_message"].items()
        )
    )


def verdict(f: dict[str, Any]) -> list[str]:
    """What went wrong (empty: drained, nothing lost, duplicated, refused, dead-lettered)."""
    wrong = []
    for where in ("STRIPE", "USAGE", "openmeter"):
        c = f["exactly_once"][where]
        if c["lost"] or c["duplicated"] or c["unexpected"]:
            wrong.append(
                f"{where}: {c['lost']} missing, {c['duplicated']} duplicated, "
                f"{c['unexpected']} unexpected"
            )
    if not f["drained"]:
        wrong.append("not drained within --drain-seconds: missing ones may still be on their way")
    if any(f["exactly_once"]["dead_letters"].values()):
        wrong.append(f"dead letters {f['exactly_once']['dead_letters']}")
    if f["sent"]["refused_count"] or f["sent"]["gave_up"]:
        wrong.append("deliveries refused or given up")
    if f["openmeter"]["early_retries"] or f["openmeter"]["wrong_source"]:
        wrong.append("Retry-After ignored or a wrong source at OpenMeter")
    return wrong


def print_logs(staging: Staging, lines: int = 15) -> None:
    """The last ``lines`` log lines (DEBUG left out) of every container started, on stderr."""
    for container in staging.stack.started:
        log = [line for line in container.logs().splitlines() if " DEBUG " not in line]
        print(f"--- {container.name}:", *log[-lines:], sep="\n  ", file=sys.stderr)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command-line options; the defaults are issue #20's month-end burst."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--events", type=int, default=100_000, help="Stripe events (100,000)")
    parser.add_argument("--rate", type=float, default=1000.0, help="Stripe events/s (1,000)")
    parser.add_argument(
        "--usage-factor", type=int, default=10, help="usage records per Stripe event (10)"
    )
    parser.add_argument("--usage-batch", type=int, default=10, help="records per usage POST")
    parser.add_argument(
        "--openmeter-rate-limit",
        type=float,
        default=10.0,
        help="requests/s the OpenMeter stand-in accepts before it answers 429 (10: half the "
        "forwarder's own pace, so a backlog meets the limit)",
    )
    parser.add_argument("--max-seconds", type=float, default=180.0, help="stop sending after")
    parser.add_argument("--drain-seconds", type=float, default=300.0, help="wait for the drain")
    parser.add_argument(
        "--idle-seconds", type=float, default=10.0, help="measure the idle stack this long first"
    )
    parser.add_argument("--max-inflight", type=int, default=256, help="requests in flight")
    parser.add_argument(
        "--log-level", help="LOG_LEVEL of functions and consumers (default: the manifests')"
    )
    parser.add_argument("--seed", type=int, default=20)
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Start the stack, measure, remove the stack; 0 only if ``verdict`` found nothing."""
    args = parse_args(argv)
    burst = Burst(
        args.events, args.rate, args.usage_factor, args.usage_batch, args.max_seconds,
        args.max_inflight, args.seed,
    )  # fmt: skip
    # SIGTERM (a CI timeout) unwinds like Ctrl-C, through the finally that removes the stack.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    with tempfile.TemporaryDirectory(prefix="month-end-", ignore_cleanup_errors=True) as tmp:
        staging = Staging.new(Path(tmp))
        # Every consumer Deployment, with the manifest's settings (no test overrides).
        staging.consumers = tuple(deployments(ENVIRONMENT))
        staging.forwarder_overrides = {}
        staging.openmeter_rate_limit = args.openmeter_rate_limit
        # Eighteen containers starting on a shared 2-core machine: the staging test's 90 s
        # for one readiness probe was not always enough (project-tiers, load average 11).
        staging.ready_timeout = 240.0
        staging.log_level = args.log_level
        functions = [*services(), USAGE_SERVICE]
        try:
            started = time.monotonic()
            try:
                staging.up(functions, prometheus=False)
            except BaseException:
                print_logs(staging)
                raise
            print(f"stack up in {time.monotonic() - started:.0f} s", file=sys.stderr, flush=True)
            figures = asyncio.run(measure(staging, burst, args.drain_seconds, args.idle_seconds))
        finally:
            staging.down()
    figures["cpu_ms_per_item"] = cpu_per_item(figures)
    print_report(figures)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    wrong = verdict(figures)
    for line in wrong:
        print(f"FAILED: {line}")
    return 1 if wrong else 0


if __name__ == "__main__":
    sys.exit(main())
