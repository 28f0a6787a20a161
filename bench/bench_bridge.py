"""Benchmark one bridge function against the ceiling of a plain JetStream publish loop.

Run: ``.venv/bin/python bench/bench_bridge.py [--quick] [--no-redis] [--cold-only]
[--repeats N] [--phase-seconds S] [--against DIR] [--json out.json]``.

In one run, on loopback only, it starts its own nats-server (and redis-server), then
measures, side by side, at concurrency 1 and 32 (events/s, p50/p99 latency, CPU of the
client, the server under test and nats-server):

* the ceiling: a plain nats-py ``js.publish`` loop of the same webhook payloads;
* a bare HTTP -> ``js.publish`` server on the same uvicorn stack (bare_publisher.py), which
  splits the gap into the HTTP server's share and the bridge's own work; once on the
  image's stack (httptools, uvloop), once on uvicorn's fallback (h11, asyncio);
* the peer: the handler users would write themselves (peer_handler.py: Starlette,
  ``stripe.Webhook.construct_event``, an awaited ``js.publish`` of the raw body);
* one function process started as the container does (``stripe-bridge serve --source
  functions/invoice_paid/main.py``) receiving correctly signed, distinct ``invoice.paid``
  events, with the memory and the redis idempotency backend (and with
  ``LOG_DELIVERIES=failures``, no log line per stored event);

Every row runs ``--repeats`` times (default 5) in turns, A B C ... A B C ..., with phases
sized to last ``--phase-seconds`` each; every figure is the median of the repeats with its
lowest and highest, a ratio is taken within each repeat, and the report says when the
repeats disagree too much to conclude (other work on the machine took the cores).

Then the ratios to the bare server and the peer beside the issue's targets, cold start
(process start -> first acknowledged event, several runs; also without compiled bytecode,
and for another checkout's library with ``--against``), the function's RSS, and a
phase-by-phase cold-start breakdown with the heaviest imports (cold_start_child.py). Every loop is
bounded; every process it starts is stopped at the end. See bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from stripe_bridge.envelope import StripeEvent
from stripe_bridge.inbox import inbox_prefix
from stripe_bridge.message import CONTENT_TYPE, MSG_ID_HEADER, subject_for
from stripe_bridge.ops.natsserver import NatsServer
from stripe_bridge.ops.samples import sample_event
from stripe_bridge.signature import sign_header
from stripe_bridge.streams import StreamSpec, provision
from stripe_bridge_testing.processes import FunctionProcess, RedisServer, rss_mib

REPO_ROOT = Path(__file__).resolve().parent.parent
CHILD = Path(__file__).resolve().parent / "cold_start_child.py"
BARE = Path(__file__).resolve().parent / "bare_publisher.py"
PEER = Path(__file__).resolve().parent / "peer_handler.py"
SECRET = "whsec_bench_" + "b" * 32
FUNCTION = "invoice_paid"
EVENT_TYPE = "invoice.paid"
STREAM = "STRIPE"
PREFIX = "stripe"
CONCURRENCIES = (1, 32)
#: Rows every ratio refers to (BARE_ROW runs on the image's server stack).
BARE_ROW = "bare HTTP -> js.publish"
BARE_H11_ROW = "bare, h11 + asyncio"
PEER_ROW = "peer: Starlette + stripe lib"
BRIDGE_ROW = "bridge (memory idempotency)"
#: The bridge (memory) on the ``--against`` library: one more row, for before/after.
AGAINST_ROW = "bridge (memory), --against DIR"
BASELINE_ROW = "baseline js.publish"
#: Issue #20's targets (they tightened #13's 0.8x aim, 350 us and 0.3 s), printed beside
#: the figures (never asserted: this is not a test).
TARGET_RATIO_TO_BARE = 0.6  # bridge events/s over the bare server's, concurrency 32
TARGET_CPU_US = 200.0  # bridge CPU per event, memory backend, concurrency 32
TARGET_P99_MS = 20.0  # bridge p99 at concurrency 32
TARGET_COLD_START = 0.15  # median, process start -> first acknowledged event
TARGET_RSS_MIB = 80.0

Payload = tuple[bytes, dict[str, str]]
Sender = Callable[[Payload], Awaitable[None]]


@dataclass
class Load:
    """One load phase: who, how concurrent, how fast, and what it cost in CPU."""

    name: str
    concurrency: int
    events: int
    seconds: float
    latencies: list[float] = field(repr=False)
    cpu: dict[str, float]  # share of one core used during the phase, per process
    repeat: int = 0  # which of the interleaved repeats this phase belongs to

    @property
    def rate(self) -> float:
        """Acknowledged events per second."""
        return self.events / self.seconds

    @property
    def cpu_per_event(self) -> float:
        """CPU seconds per event of the process under test (the client for the baseline).

        Steadier than events/s when other work shares the machine's cores.
        """
        return self.cpu.get("function", self.cpu["client"]) / self.rate

    def percentile(self, q: float) -> float:
        """Latency percentile ``q`` (0-100) in milliseconds."""
        return percentile(self.latencies, q) * 1000


@dataclass
class ColdStart:
    """Process start -> first acknowledged event, seen from outside and by the function."""

    outside: list[float]
    metric: list[float]
    rss_idle_mib: list[float]


# -- payloads -----------------------------------------------------------------------------


def _bodies(count: int) -> Iterator[tuple[str, bytes]]:
    """``count`` distinct ``invoice.paid`` events (a real Stripe payload): id and JSON body."""
    for _ in range(count):
        event = sample_event(EVENT_TYPE)
        yield event["id"], json.dumps(event).encode()


def payloads(count: int) -> list[Payload]:
    """Webhook deliveries: distinct events, each freshly signed as Stripe signs them."""
    return [
        (body, {"Stripe-Signature": sign_header(SECRET.encode(), body)})
        for _, body in _bodies(count)
    ]


def baseline_payloads(count: int) -> list[Payload]:
    """The same bodies for the baseline, with the headers the bridge sets on its messages."""
    return [
        (body, {"Content-Type": CONTENT_TYPE, MSG_ID_HEADER: id_}) for id_, body in _bodies(count)
    ]


def subject() -> str:
    """The subject the bridge publishes these events to (the baseline uses it too)."""
    return subject_for(PREFIX, StripeEvent.model_validate(sample_event(EVENT_TYPE)))


# -- measuring ----------------------------------------------------------------------------

#: A figure whose repeats spread more than this around their median (highest minus lowest,
#: over the median) is reported as too noisy to conclude from.
NOISY_SPREAD = 0.25


def percentile(values: Sequence[float], q: float) -> float:
    """Percentile ``q`` (0-100) of ``values`` (nearest rank)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))]


def median(values: Iterable[float]) -> float:
    """The median of ``values``."""
    return statistics.median(list(values))


def relative_spread(values: Sequence[float]) -> float:
    """(highest - lowest) / median: how far the repeats of one figure disagree."""
    return (max(values) - min(values)) / statistics.median(values)


def spread(values: Sequence[float], spec: str) -> str:
    """``median [lowest-highest]`` of ``values``, each formatted with ``spec``."""
    if len(values) == 1:
        return format(values[0], spec)
    return (
        f"{format(statistics.median(values), spec)} "
        f"[{format(min(values), spec)}-{format(max(values), spec)}]"
    )


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def drive(
    name: str,
    make_sender: Callable[[], Awaitable[Sender]],
    items: Sequence[Payload],
    concurrency: int,
    pids: dict[str, int],
) -> Load:
    """Send every item with ``concurrency`` workers (each its own sender); time each one."""
    senders = [await make_sender() for _ in range(concurrency)]
    work: Iterator[Payload] = iter(items)
    latencies: list[float] = []

    async def worker(send: Sender) -> None:
        for item in work:  # shared iterator: each item is taken by exactly one worker
            started = time.perf_counter()
            await send(item)
            latencies.append(time.perf_counter() - started)

    cpu_before = {who: cpu_seconds(pid) for who, pid in pids.items()}
    client_before = time.process_time()
    started = time.perf_counter()
    await asyncio.gather(*(worker(send) for send in senders))
    seconds = time.perf_counter() - started
    cpu = {who: (cpu_seconds(pid) - cpu_before[who]) / seconds for who, pid in pids.items()}
    cpu["client"] = (time.process_time() - client_before) / seconds
    return Load(name, concurrency, len(items), seconds, latencies, cpu)


# -- baseline: plain nats-py publishes --------------------------------------------------


async def baseline(nats_url: str, items: Sequence[Payload], concurrency: int, pid: int) -> Load:
    """The ceiling: ``js.publish`` of the same bodies, awaiting each PubAck."""
    import nats

    # The user in the URL may subscribe only to its own inbox (nats/'s nats.conf).
    user = urlsplit(nats_url.split(",")[0]).username
    nc = await nats.connect(nats_url, inbox_prefix=inbox_prefix(user))
    js = nc.jetstream(timeout=10)
    to = subject()

    async def make_sender() -> Sender:
        async def send(item: Payload) -> None:
            await js.publish(to, item[0], stream=STREAM, headers=item[1])

        return send

    try:
        return await drive(BASELINE_ROW, make_sender, items, concurrency, {"nats": pid})
    finally:
        await nc.close()


# -- the function under test --------------------------------------------------------------


class HttpConnection:
    """A minimal HTTP/1.1 keep-alive client.

    On 2 cores every CPU cycle the load generator spends is taken from the function under
    test; a raw request/response over one asyncio stream costs a fraction of a full client
    library's per-request work (the CPU columns show what the client used).
    """

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, port: int) -> HttpConnection:
        """Connect to the function on loopback."""
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        return cls(reader, writer)

    async def post(
        self, body: bytes, headers: dict[str, str], path: str = "/"
    ) -> tuple[int, bytes]:
        """POST ``body`` to ``path``; return status and response body."""
        head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        self.writer.write(
            f"POST {path} HTTP/1.1\r\n".encode()
            + b"Host: 127.0.0.1\r\nContent-Type: application/json\r\n"
            + f"{head}Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        response = await self.reader.readuntil(b"\r\n\r\n")
        lines = response.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        length = 0
        for line in lines[1:]:
            key, _, value = line.partition(":")
            if key.strip().lower() == "content-length":
                length = int(value)
        return status, await self.reader.readexactly(length)

    def close(self) -> None:
        """Close the socket."""
        self.writer.close()


async def http_load(
    name: str,
    function: FunctionProcess,
    items: Sequence[Payload],
    concurrency: int,
    pids: dict[str, int],
) -> Load:
    """POST every item to ``function`` over ``concurrency`` keep-alive connections."""
    assert function.process is not None
    connections: list[HttpConnection] = []

    async def make_sender() -> Sender:
        connection = await HttpConnection.open(function.port)
        connections.append(connection)

        async def send(item: Payload) -> None:
            status, answer = await connection.post(*item)
            if status != 200 or b'"published"' not in answer:
                raise RuntimeError(f"{name}: HTTP {status} {answer[:200]!r}")

        return send

    try:
        return await drive(name, make_sender, items, concurrency, pids)
    finally:
        for connection in connections:
            connection.close()


def function_env(nats_url: str, **extra: str) -> dict[str, str]:
    """The function's environment: the bench's NATS and secret, and INFO logging.

    INFO is the default: one line per webhook, as in production (into a log file here).
    """
    return {"NATS_URL": nats_url, "STRIPE_WEBHOOK_SECRET": SECRET, "LOG_LEVEL": "INFO", **extra}


async def first_ack(port: int, deadline: float) -> None:
    """POST one event until the function acknowledges it (it may not listen yet)."""
    body, headers = payloads(1)[0]
    while time.perf_counter() < deadline:
        try:
            connection = await HttpConnection.open(port)
        except OSError:
            await asyncio.sleep(0.002)  # not listening yet: poll again
            continue
        try:
            status, answer = await connection.post(body, headers)
        finally:
            connection.close()
        if status != 200:
            raise RuntimeError(f"cold start: HTTP {status} {answer[:200]!r}")
        return
    raise TimeoutError("cold start: no acknowledged event before the deadline")


def cold_metric(function: FunctionProcess) -> float:
    """The function's own ``stripe_bridge_cold_start_seconds`` from /metrics."""
    import httpx

    text = httpx.get(function.url + "metrics", timeout=5).text
    for line in text.splitlines():
        if line.startswith("stripe_bridge_cold_start_seconds "):
            return float(line.split()[1])
    raise RuntimeError("stripe_bridge_cold_start_seconds missing from /metrics")


def function_process(
    env: dict[str, str], workdir: Path, function: str = FUNCTION
) -> FunctionProcess:
    """A function started as the image starts it: ``stripe_bridge.serve``, or
    ``stripe-bridge serve`` for a library from before that entrypoint (``--against``)."""
    library = env.get("PYTHONPATH")
    if library is None or (Path(library) / "stripe_bridge" / "serve.py").is_file():
        return FunctionProcess(function, env, workdir, REPO_ROOT)
    source = REPO_ROOT / "functions" / function / "main.py"
    command = [sys.executable, "-m", "stripe_bridge.cli", "serve", "--source", str(source)]
    return FunctionProcess(function, env, workdir, REPO_ROOT, command=command)


#: Billing functions timed from process start to their first ``/readyz`` 200 (what
#: Knative waits for before routing), with what each needs to start.
BILLING_COLD = {
    "billing_checkout": {
        "STRIPE_API_KEY": "sk_test_bench",
        "CHECKOUT_SUCCESS_URL": "https://app.example/done",
    },
    "billing_entitlements": {},
    "billing_usage": {},  # ready once NATS answers and the USAGE stream exists
}


def readyz_ok(url: str) -> bool:
    """Whether ``GET url/readyz`` answers 200 now (False while the port is closed)."""
    try:
        with urllib.request.urlopen(url + "readyz", timeout=5) as answer:
            return bool(answer.status == 200)
    except (OSError, urllib.error.HTTPError):
        return False


def ready_cold_starts(
    nats_url: str, workdir: Path, runs: int, libraries: dict[str, dict[str, str]]
) -> dict[str, dict[str, list[float]]]:
    """Seconds from spawn to the first ``/readyz`` 200, per library and billing function,
    ``runs`` of each, in turns."""
    found: dict[str, dict[str, list[float]]] = {
        name: {function: [] for function in BILLING_COLD} for name in libraries
    }
    # One unmeasured start of each that may write bytecode, as for the webhook function
    # (cold_starts): what only a billing function imports (stripe-python, before #20) would
    # otherwise compile from source on every start in a virtualenv made without bytecode.
    for extra in libraries.values():
        for function, needs in BILLING_COLD.items():
            writes = {**needs, **extra, "PYTHONDONTWRITEBYTECODE": ""}
            ready_seconds(nats_url, workdir, function, writes)
    for _ in range(runs):
        for name, extra in libraries.items():
            for function, needs in BILLING_COLD.items():
                seconds = ready_seconds(nats_url, workdir, function, {**needs, **extra})
                found[name][function].append(seconds)
    return found


def ready_seconds(nats_url: str, workdir: Path, function: str, extra: dict[str, str]) -> float:
    """Seconds from spawning ``function`` (``extra`` in its environment) to its first
    ``/readyz`` 200; the process is stopped before this returns."""
    process = function_process(function_env(nats_url, **extra), workdir, function)
    try:
        started = time.perf_counter()
        process.spawn()
        deadline = started + 30
        while not readyz_ok(process.url):
            if time.perf_counter() > deadline:
                raise TimeoutError(f"{function}: /readyz not 200 within 30 s")
            time.sleep(0.002)  # not ready yet: poll again
        return time.perf_counter() - started
    finally:
        process.stop()


def cold_starts(nats_url: str, workdir: Path, runs: int, **extra: str) -> ColdStart:
    """Start a fresh function ``runs`` times; time process start -> first 200."""
    result = ColdStart([], [], [])
    for _ in range(runs):
        function = function_process(function_env(nats_url, **extra), workdir)
        try:
            started = time.perf_counter()
            function.spawn()
            asyncio.run(first_ack(function.port, started + 30))
            result.outside.append(time.perf_counter() - started)
            assert function.process is not None
            result.rss_idle_mib.append(rss_mib(function.process.pid))
            result.metric.append(cold_metric(function))
        finally:
            function.stop()
    return result


def interleaved_cold_starts(
    nats_url: str, workdir: Path, runs: int, variants: dict[str, dict[str, str]]
) -> dict[str, ColdStart]:
    """``runs`` cold starts of each variant (extra environment), taken in turns.

    Turns spread a burst of other work on the machine over every variant alike.
    """
    results = {name: ColdStart([], [], []) for name in variants}
    for _ in range(runs):
        for name, extra in variants.items():
            one = cold_starts(nats_url, workdir, 1, **extra)
            results[name].outside += one.outside
            results[name].metric += one.metric
            results[name].rss_idle_mib += one.rss_idle_mib
    return results


def warm_up(name: str, function: FunctionProcess, warmup: int, nats_pid: int) -> float:
    """Warm the started ``function`` up; return the events/s it reached while warming."""
    assert function.process is not None
    pids = {"function": function.process.pid, "nats": nats_pid}
    return asyncio.run(http_load(name, function, payloads(warmup), 8, pids)).rate


def function_loads(
    name: str, function: FunctionProcess, counts: dict[int, int], warmup: int, nats_pid: int
) -> tuple[list[Load], float]:
    """Warm the started ``function`` up, load it once at each concurrency; loads and RSS.

    For benches of one variant at a time (bench_push.py); this bench's rows run in turns.
    """
    assert function.process is not None
    pids = {"function": function.process.pid, "nats": nats_pid}
    warm_up(name, function, warmup, nats_pid)
    loads = [
        asyncio.run(http_load(name, function, payloads(count), concurrency, pids))
        for concurrency, count in counts.items()
    ]
    return loads, rss_mib(function.process.pid)


def phase_counts(rate: float, phases: Phases) -> dict[int, int]:
    """Events per concurrency for a row that reached ``rate`` events/s while warming.

    A fixed ``--events`` gives every row the same count; otherwise each phase is sized to
    last about ``phases.seconds``, so a short burst of other work on the machine cannot
    decide a fast row's figure (the baseline acknowledges ~5x as many events per second
    as the bridge, the peer ~3x fewer).
    """
    if phases.events:
        return {1: max(100, phases.events // 5), 32: phases.events}
    sized = max(phases.floor, int(rate * phases.seconds))
    # Concurrency 1 runs at about half the rate of 32 (one request in flight).
    return {1: max(phases.floor, sized // 2), 32: sized}


# -- cold-start breakdown ----------------------------------------------------------------


def interpreter_start(runs: int) -> float:
    """Median wall time of ``python -c pass`` (with site): the floor of any cold start."""
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run([sys.executable, "-c", "pass"], check=True)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


@dataclass
class Breakdown:
    """Median time per cold-start phase, and import self time per top-level package."""

    phases: list[tuple[str, float]]
    imports: list[tuple[str, float]]


def _child_phases(env: dict[str, str]) -> list[tuple[str, float]]:
    """One run of cold_start_child.py: its phases, after checking it stored both events."""
    out = subprocess.run(
        [sys.executable, str(CHILD)], env=env, capture_output=True, text=True, check=True
    )
    report = json.loads(out.stdout)
    if report["statuses"] != [200, 200, 200]:
        raise RuntimeError(f"cold-start child got {report['statuses']}: {out.stderr[-500:]}")
    return [(name, seconds) for name, seconds in report["phases"]]


def breakdowns(
    nats_url: str, runs: int, libraries: dict[str, dict[str, str]]
) -> dict[str, Breakdown]:
    """Phases and imports per library (``libraries``: name -> extra environment).

    cold_start_child.py runs ``runs`` times per library, in turns, then once each under
    ``-X importtime``.
    """
    source = str(REPO_ROOT / "functions" / FUNCTION / "main.py")
    envs = {
        name: {**os.environ, **function_env(nats_url, **extra), "BENCH_FUNCTION_SOURCE": source}
        for name, extra in libraries.items()
    }
    samples: dict[str, list[list[tuple[str, float]]]] = {name: [] for name in envs}
    for _ in range(runs):
        for name, env in envs.items():
            samples[name].append(_child_phases(env))
    found = {}
    for name, env in envs.items():
        phases = [
            (phase, statistics.median(sample[i][1] for sample in samples[name]))
            for i, (phase, _) in enumerate(samples[name][0])
        ]
        traced = subprocess.run(
            [sys.executable, "-X", "importtime", str(CHILD)],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        found[name] = Breakdown(phases, import_self_times(traced.stderr))
    return found


def import_self_times(importtime: str) -> list[tuple[str, float]]:
    """Seconds of import self-time per top-level package, from ``-X importtime`` output."""
    totals: dict[str, float] = {}
    for line in importtime.splitlines():
        if not line.startswith("import time:") or "self [us]" in line:
            continue
        self_us, _cumulative, module = line[len("import time:") :].split("|")
        top = module.strip().split(".")[0]
        totals[top] = totals.get(top, 0.0) + int(self_us) / 1e6
    return sorted(totals.items(), key=lambda item: item[1], reverse=True)


# -- report ---------------------------------------------------------------------------------


def machine() -> str:
    """One line naming what the figures were measured on."""
    from importlib.metadata import version

    return (
        f"{os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"nats-py {version('nats-py')}, uvicorn {version('uvicorn')}, "
        f"payload {len(payloads(1)[0][0])} bytes ({EVENT_TYPE})"
    )


#: Name of the cold-start variant measured with this checkout's library as it is.
THIS = "this checkout"


@dataclass
class Report:
    """Every figure of one run."""

    loads: list[Load] = field(default_factory=list)
    #: Cold starts per variant: THIS, "without bytecode", and "against DIR" if asked for.
    cold: dict[str, ColdStart] = field(default_factory=dict)
    rss_after_load_mib: dict[str, float] = field(default_factory=dict)
    interpreter_seconds: float = 0.0
    #: Phase breakdown per library: THIS, and "against DIR" if asked for.
    breakdowns: dict[str, Breakdown] = field(default_factory=dict)
    #: Billing functions: library -> function -> seconds from spawn to /readyz 200.
    billing_ready: dict[str, dict[str, list[float]]] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        """The figures for ``--json`` (latencies as percentiles, not every sample)."""
        figures = asdict(self)
        figures["machine"] = machine()
        figures["loads"] = [
            {**asdict(load), "latencies": None, "rate": load.rate,
             "cpu_per_event": load.cpu_per_event,
             "p50_ms": load.percentile(50), "p99_ms": load.percentile(99)}
            for load in self.loads
        ]  # fmt: skip
        top = max(CONCURRENCIES)
        figures["ratios"] = {
            f"{BRIDGE_ROW} / {reference}, concurrency {top}": self.ratios(
                BRIDGE_ROW, reference, top
            )
            for reference in (BARE_ROW, PEER_ROW)
        }
        return figures

    def print(self) -> None:
        """The table, the ratios and targets, cold start and its breakdown."""
        print(f"stripe-bridge benchmark: {machine()}")
        print()
        if self.loads:
            self._print_loads()
            print()
        self._print_cold_start()
        print()
        self._print_breakdown()

    def _summaries(self) -> dict[tuple[str, int], list[Load]]:
        """Every row's phases per (name, concurrency), in repeat order."""
        rows: dict[tuple[str, int], list[Load]] = {}
        for load in sorted(self.loads, key=lambda item: (item.concurrency, item.repeat)):
            rows.setdefault((load.name, load.concurrency), []).append(load)
        return rows

    def ratios(self, name: str, reference: str, concurrency: int) -> list[float]:
        """``name``'s events/s over ``reference``'s, taken within each repeat."""
        rows = self._summaries()
        mine = {load.repeat: load.rate for load in rows.get((name, concurrency), [])}
        theirs = {load.repeat: load.rate for load in rows.get((reference, concurrency), [])}
        return [mine[r] / theirs[r] for r in sorted(mine) if r in theirs]

    def _print_loads(self) -> None:
        rows = self._summaries()
        repeats = max(load.repeat for load in self.loads) + 1
        print(
            f"each figure: the median of {repeats} interleaved repeats [lowest-highest]; "
            "ratios are taken within a repeat, then their median"
        )
        header = (
            f"{'':32} {'conc':>4} {'events':>6} {'events/s':>22} {'p50 ms':>7} {'p99 ms':>7} "
            f"{'% ceiling':>9} {'x bare':>16} {'x peer':>16} {'CPU us/ev':>17}"
            "   CPU (cores): client function nats"
        )
        print(header)
        print("-" * len(header))
        for (name, concurrency), loads in rows.items():
            shares = self.ratios(name, BASELINE_ROW, concurrency)
            cpu = "  ".join(
                f"{median(load.cpu[who] for load in loads):.2f}" if who in loads[0].cpu else "  -  "
                for who in ("client", "function", "nats")
            )
            ratios = [self.ratios(name, row, concurrency) for row in (BARE_ROW, PEER_ROW)]
            print(
                f"{name:32} {concurrency:>4} {loads[0].events:>6} "
                f"{spread([load.rate for load in loads], '.0f'):>22} "
                f"{median(load.percentile(50) for load in loads):>7.2f} "
                f"{median(load.percentile(99) for load in loads):>7.2f} "
                f"{median(shares):>9.0%} "
                + "".join(f" {spread(r, '.2f') if r else '-':>16}" for r in ratios)
                + f" {spread([load.cpu_per_event * 1e6 for load in loads], '.0f'):>17}"
                + f"   {cpu:>29}"
            )
        print()
        self._print_targets()

    def _print_targets(self) -> None:
        """The bridge at concurrency 32 against the targets, and whether noise decides it."""
        top = max(CONCURRENCIES)
        bridge = self._summaries().get((BRIDGE_ROW, top))
        if bridge is None:
            return

        def verdict(ok: bool) -> str:
            return "meets" if ok else "MISSES"

        print(f"targets, {BRIDGE_ROW} at concurrency {top} (medians of the repeats):")
        for reference, target in ((BARE_ROW, TARGET_RATIO_TO_BARE), (PEER_ROW, 1.0)):
            ratios = self.ratios(BRIDGE_ROW, reference, top)
            if ratios:
                ratio = median(ratios)
                ok = ratio >= target if reference == BARE_ROW else ratio > target
                print(
                    f"  {spread(ratios, '.2f')}x the events/s of {reference} "
                    f"({verdict(ok)} {'>=' if reference == BARE_ROW else '>'} {target:g}x)"
                )
        cpu_us = [load.cpu_per_event * 1e6 for load in bridge]
        print(
            f"  {spread(cpu_us, '.0f')} us CPU per event "
            f"({verdict(median(cpu_us) <= TARGET_CPU_US)} <= {TARGET_CPU_US:g} us)"
        )
        p99 = [load.percentile(99) for load in bridge]
        print(
            f"  p99 {spread(p99, '.1f')} ms ({verdict(median(p99) < TARGET_P99_MS)} "
            f"< {TARGET_P99_MS:g} ms)"
        )
        for name, concurrency in self._summaries():
            if name.startswith("bridge (redis") and concurrency == top:
                extra = self.ratios(name, BRIDGE_ROW, top)
                redis = [load.cpu_per_event * 1e6 for load in self._summaries()[(name, top)]]
                print(
                    f"  the redis backend adds {median(redis) - median(cpu_us):.0f} us CPU per "
                    f"event ({spread(extra, '.2f')}x the memory backend's events/s)"
                )
        before = self._summaries().get((AGAINST_ROW, top))
        if before is not None:
            theirs = {load.repeat: load.cpu_per_event for load in before}
            change = [load.cpu_per_event / theirs[load.repeat] for load in bridge]
            print(
                f"  {spread(change, '.2f')}x the CPU per event of {AGAINST_ROW} and "
                f"{spread(self.ratios(BRIDGE_ROW, AGAINST_ROW, top), '.2f')}x its events/s "
                "(each taken within a repeat)"
            )
        for figure, values in (
            ("bridge / bare events/s", self.ratios(BRIDGE_ROW, BARE_ROW, top)),
            ("bridge CPU per event", cpu_us),
        ):
            if len(values) > 1 and relative_spread(values) > NOISY_SPREAD:
                print(
                    f"  TOO NOISY TO CONCLUDE on {figure}: its repeats spread "
                    f"{relative_spread(values):.0%} around the median (> {NOISY_SPREAD:.0%}); "
                    "other work took the cores: rerun on a quieter machine"
                )

    def _print_cold_start(self) -> None:
        print("cold start, process start -> first acknowledged event (median, then every run):")
        for name, cold in self.cold.items():
            median = statistics.median(cold.outside)
            verdict = "meets" if median < TARGET_COLD_START else "MISSES"
            print(
                f"  {name:30} {median:.3f} s  ({verdict} < {TARGET_COLD_START:g} s; "
                f"own metric {statistics.median(cold.metric):.3f} s)  "
                + " ".join(f"{t:.3f}" for t in cold.outside)
            )
        print(
            "  (own metric: the function's stripe_bridge_cold_start_seconds, from the kernel's "
            "process start time)"
        )
        if self.billing_ready:
            print(
                "cold start of the billing functions, process start -> /readyz 200 "
                "(median [fastest-slowest]):"
            )
            for name, functions in self.billing_ready.items():
                cells = "  ".join(
                    f"{function} {statistics.median(seconds):.3f} s "
                    f"[{min(seconds):.3f}-{max(seconds):.3f}]"
                    for function, seconds in functions.items()
                )
                print(f"  {name:30} {cells}")
        rss = statistics.median(self.cold[THIS].rss_idle_mib)
        print(f"RSS of the function after its first event: {rss:.1f} MiB")
        for name, mib in self.rss_after_load_mib.items():
            mark = ""
            if name.startswith("bridge"):
                mark = (
                    f" ({'meets' if mib < TARGET_RSS_MIB else 'MISSES'} < {TARGET_RSS_MIB:g} MiB)"
                )
            print(f"RSS of {name} after its load: {mib:.1f} MiB{mark}")

    def _print_breakdown(self) -> None:
        names = list(self.breakdowns)
        print(
            "cold-start breakdown, ms (median of fresh interpreters, ASGI app driven in-process):"
        )
        print(f"  {'':58}" + "".join(f" {name[:24]:>24}" for name in names))
        rows: list[tuple[str, list[float]]] = [
            ("python -c pass (interpreter + site)", [self.interpreter_seconds] * len(names))
        ]
        for i, (phase, _) in enumerate(self.breakdowns[THIS].phases):
            rows.append((phase, [b.phases[i][1] for b in self.breakdowns.values()]))
        rows.append(
            (
                "sum up to the first acknowledged event",
                [
                    sum(seconds[k] for phase, seconds in rows if not phase.startswith("second"))
                    for k in range(len(names))
                ],
            )
        )
        for phase, seconds in rows:
            print(f"  {phase:58}" + "".join(f" {value * 1000:24.1f}" for value in seconds))
        for name, found in self.breakdowns.items():
            total = sum(seconds for _, seconds in found.imports) * 1000
            print(
                f"imports, {name} (self time per top-level package, -X importtime): {total:.0f} ms"
            )
            print("  " + ", ".join(f"{pkg} {sec * 1000:.0f}" for pkg, sec in found.imports[:12]))


# -- main ---------------------------------------------------------------------------------


async def provision_stream(nats_url: str) -> None:
    """Create the bridge's stream, as ``stripe-bridge provision`` does."""
    import nats

    nc = await nats.connect(nats_url)
    try:
        await provision(nc.jetstream(), StreamSpec(STREAM, PREFIX))
    finally:
        await nc.close()


async def provision_usage(nats_url: str) -> None:
    """Create the USAGE streams, as the billing consumers do at start (billing_usage's
    readiness needs USAGE)."""
    from stripe_bridge.billing.usage import provision_usage_streams

    import nats

    nc = await nats.connect(nats_url)
    try:
        await provision_usage_streams(nc.jetstream())
    finally:
        await nc.close()


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Command-line options; the defaults take a minute or two on 2 cores."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="fewer events and runs (smoke run)")
    parser.add_argument("--no-redis", action="store_true", help="skip the redis backend")
    parser.add_argument(
        "--events", type=int, help="a fixed number of events per concurrency-32 phase"
    )
    parser.add_argument(
        "--phase-seconds",
        type=float,
        default=2.0,
        help="target length of one load phase, sized from each row's warm-up rate (default 2)",
    )
    parser.add_argument(
        "--repeats", type=int, help="interleaved repeats of every row (default 5, --quick 2)"
    )
    parser.add_argument("--cold-runs", type=int, help="cold starts to take the median of")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    parser.add_argument("--cold-only", action="store_true", help="skip the load phases")
    parser.add_argument(
        "--against",
        type=Path,
        metavar="DIR",
        help="another checkout's shared/ folder (e.g. a git worktree of an older commit): "
        "its cold start and breakdown are measured too, in turns with this checkout's",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Run every measurement, print the report; the exit code is 0 unless something broke."""
    args = parse_args(argv)
    phases = Phases(
        repeats=args.repeats or (2 if args.quick else 5),
        seconds=args.phase_seconds / (4 if args.quick else 1),
        events=args.events,
        warmup=100 if args.quick else 300,
    )
    cold_runs = args.cold_runs or (3 if args.quick else 7)
    report = Report()
    with tempfile.TemporaryDirectory(prefix="stripe-bridge-bench-") as tmp, ExitStack() as stack:
        workdir = Path(tmp)
        nats_server = stack.enter_context(NatsServer(workdir / "nats"))
        asyncio.run(provision_stream(nats_server.url))
        libraries: dict[str, dict[str, str]] = {THIS: {}}
        if args.against:
            libraries[f"against {args.against}"] = {"PYTHONPATH": str(args.against.resolve())}
        variants = {
            **libraries,
            # An empty cache prefix and no writes: every module compiles from source, as in
            # an image whose build did not precompile its bytecode (and cannot write it).
            "without bytecode (no .pyc)": {
                "PYTHONPYCACHEPREFIX": str(workdir / "empty-pycache"),
                "PYTHONDONTWRITEBYTECODE": "1",
            },
        }
        # Cold start is measured with compiled bytecode, as the image has it (compileall). A
        # virtualenv made with PYTHONDONTWRITEBYTECODE set has none, and every import would
        # compile from source, run after run: one unmeasured start per library that may
        # write bytecode compiles what a function imports.
        for extra in libraries.values():
            cold_starts(nats_server.url, workdir / "cold", 1, **extra, PYTHONDONTWRITEBYTECODE="")
        report.cold = interleaved_cold_starts(
            nats_server.url, workdir / "cold", cold_runs, variants
        )
        asyncio.run(provision_usage(nats_server.url))
        report.billing_ready = ready_cold_starts(
            nats_server.url, workdir / "cold", cold_runs, libraries
        )
        report.interpreter_seconds = interpreter_start(cold_runs)
        report.breakdowns = breakdowns(nats_server.url, cold_runs, libraries)
        if not args.cold_only:
            report.loads, report.rss_after_load_mib = run_loads(
                nats_server, phases, workdir, stack, not args.no_redis, args.against
            )
    report.print()
    if args.json:
        args.json.write_text(json.dumps(report.as_json(), indent=2))
    return 0


@dataclass
class Phases:
    """How long each load phase is and how often the rows are repeated in turns."""

    repeats: int
    seconds: float  # target wall time of one phase (ignored when ``events`` is set)
    events: int | None  # a fixed count per concurrency-32 phase instead (``--events``)
    warmup: int
    floor: int = 200  # never fewer events than this in a phase


def run_loads(
    nats_server: NatsServer,
    phases: Phases,
    workdir: Path,
    stack: ExitStack,
    redis: bool,
    against: Path | None = None,
) -> tuple[list[Load], dict[str, float]]:
    """Every row at each concurrency, ``phases.repeats`` times in turns; RSS after load.

    All servers are started first and stay up; then each repeat runs every row once per
    concurrency (A B C ... A B C ...), starting one row later each repeat, so a burst of
    other work on the machine lands on different rows in different repeats instead of
    deciding one row's figure. Ratios are taken within a repeat (see Summary). ``against``
    adds the bridge (memory) on another checkout's library as one more row.
    """
    assert nats_server.process is not None
    nats_pid = nats_server.process.pid
    servers: dict[str, tuple[dict[str, str], list[str] | None]] = {
        BARE_H11_ROW: ({"BARE_STACK": "h11"}, [sys.executable, str(BARE)]),
        BARE_ROW: ({}, [sys.executable, str(BARE)]),
        PEER_ROW: ({}, [sys.executable, str(PEER)]),
        BRIDGE_ROW: ({}, None),
        "bridge, LOG_DELIVERIES=failures": ({"LOG_DELIVERIES": "failures"}, None),
    }
    if redis:
        redis_server = stack.enter_context(RedisServer(workdir / "redis"))
        extra = {"IDEMPOTENCY_BACKEND": "redis", "REDIS_URL": redis_server.url}
        servers["bridge (redis idempotency)"] = (extra, None)
    started: dict[str, FunctionProcess] = {}
    for name, (extra, command) in servers.items():
        env = function_env(nats_server.url, **extra)
        process = FunctionProcess(FUNCTION, env, workdir / "functions", REPO_ROOT, command=command)
        started[name] = stack.enter_context(process)
    if against is not None:
        env = function_env(nats_server.url, PYTHONPATH=str(against.resolve()))
        process = function_process(env, workdir / "functions")
        started[AGAINST_ROW] = stack.enter_context(process)
    # The baseline's warm-up rate sizes its phases like the servers' (no HTTP in between).
    warm = asyncio.run(
        baseline(nats_server.url, baseline_payloads(phases.warmup), 8, nats_pid)
    ).rate
    counts = {BASELINE_ROW: phase_counts(warm, phases)}
    for name, function in started.items():
        counts[name] = phase_counts(warm_up(name, function, phases.warmup, nats_pid), phases)
    rows = list(counts)
    done: list[Load] = []
    for repeat in range(phases.repeats):
        turn = rows[repeat % len(rows) :] + rows[: repeat % len(rows)]
        for concurrency in CONCURRENCIES:
            for name in turn:
                count = counts[name][concurrency]
                if name == BASELINE_ROW:
                    items = baseline_payloads(count)
                    load = asyncio.run(baseline(nats_server.url, items, concurrency, nats_pid))
                else:
                    function = started[name]
                    assert function.process is not None
                    pids = {"function": function.process.pid, "nats": nats_pid}
                    load = asyncio.run(
                        http_load(name, function, payloads(count), concurrency, pids)
                    )
                load.repeat = repeat
                done.append(load)
        print(f"repeat {repeat + 1}/{phases.repeats} done", file=sys.stderr, flush=True)
    rss = {}
    for name, function in started.items():
        assert function.process is not None
        rss[name] = rss_mib(function.process.pid)
    return done, rss


if __name__ == "__main__":
    sys.exit(main())
