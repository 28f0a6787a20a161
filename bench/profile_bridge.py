"""Where one function process spends its CPU per webhook, sampled by py-spy under load.

Run from the repository root: ``.venv/bin/python -m bench.profile_bridge [--events N]
[--against DIR] [--env K=V] [--bare] [--detail PART]``.

Starts a nats-server and one function process as bench_bridge.py does (``stripe-bridge
serve``, memory idempotency, INFO logging), warms it up, then samples it with ``py-spy
record`` (Python frames, 1000 per second while not idle) while N signed events are
POSTed over 32 connections. Each sample is charged to the innermost frame that names a
part of the path (the log line, metrics, NATS client, JSON parse, CloudEvent, uvicorn...),
so the rows add up to 100 %; the CPU per event (from /proc) times a row's share estimates
its microseconds. Python frames only: time in C extensions (httptools, uvloop, pydantic
core, hmac, json) shows as the Python function that called them. ``--against DIR`` profiles
another checkout's ``shared/`` the same way (PYTHONPATH), for before/after summaries
(bench/README.md); ``--bare`` profiles the bare server (bare_publisher.py: the same
uvicorn stack and NATS client, none of the bridge's work) too, and ``--detail PART`` splits
one row (e.g. ``'event loop'``) by innermost frame. Every process it starts is stopped at
the end.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import tempfile
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
    function_process,
    http_load,
    payloads,
    provision_stream,
)

#: (substring of a frame's file, part of the path), tried innermost frame first.
PARTS = (
    ("logging/", "log line (logging)"),
    ("prometheus_client/", "metrics (prometheus_client)"),
    ("nats/", "NATS client: publish, PubAck"),
    ("cloudevents/", "CloudEvent: SDK"),
    ("stripe_bridge/message.py", "CloudEvent: translate + JSON"),
    ("stripe_bridge/translations.py", "CloudEvent: translate + JSON"),
    ("stripe_bridge/envelope.py", "JSON parse + depth check"),
    ("stripe_bridge/signature.py", "signature (HMAC)"),
    ("hmac.py", "signature (HMAC)"),
    ("cachetools/", "idempotency (memory)"),
    ("stripe_bridge/idempotency.py", "idempotency (memory)"),
    ("redis/", "idempotency (redis)"),
    ("stripe_bridge/jetstream.py", "bridge: jetstream.py"),
    ("stripe_bridge/ingest.py", "bridge: ingest.py"),
    ("stripe_bridge/webhook.py", "bridge: webhook.py (+ envelope validation)"),
    ("stripe_bridge/http.py", "bridge: http.py (body, reply)"),
    # server.py is the HTTP protocol's own layer (uvicorn's protocol subclass and the
    # transport that joins an answer's writes): its innermost frames are uvicorn's work.
    ("stripe_bridge/server.py", "uvicorn (HTTP protocol)"),
    ("starlette/", "Starlette (request, response, routing)"),
    ("uvicorn/", "uvicorn (HTTP protocol)"),
    ("asyncio/", "event loop"),
    ("uvloop", "event loop"),
)
OTHER = "other"


def part_of(stack: str) -> str:
    """The part a sampled stack (``outer;...;inner`` frames) is charged to."""
    for frame in reversed(stack.split(";")):
        for needle, part in PARTS:
            if needle in frame:
                return part
    return OTHER


def read_samples(raw: str, detail: str | None = None) -> Counter[str]:
    """Samples per part from py-spy's raw (collapsed stacks) output.

    With ``detail`` (a part's name), that part's samples are split by innermost frame
    (``part: frame``), to see what it is made of.
    """
    parts: Counter[str] = Counter()
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            part = part_of(stack)
            if part == detail:
                frame = stack.rsplit(";", 1)[-1]
                part = f"{part}: {frame.split(':', 1)[0]}"  # without the line number
            parts[part] += int(count)
    return parts


def py_spy() -> str:
    """The py-spy installed beside this Python (the test group's)."""
    return str(Path(sys.executable).parent / "py-spy")


def profile(
    function: FunctionProcess,
    workdir: Path,
    events: int,
    detail: str | None = None,
    native: bool = False,
) -> tuple[Counter[str], float]:
    """Samples per part, and the function's CPU microseconds per event, under load."""
    with function:
        assert function.process is not None
        pid = function.process.pid
        pids = {"function": pid}
        asyncio.run(http_load("warm-up", function, payloads(500), 8, pids))
        out = workdir / f"stacks-{pid}.txt"
        record = ["record", "--pid", str(pid), "--rate", "1000"]
        # Native stacks need the process paused while its C stack is read.
        record += ["--native"] if native else ["--nonblocking"]
        spy = subprocess.Popen(
            [py_spy(), *record, "--format", "raw", "--output", str(out)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        assert spy.stdout is not None
        started = spy.stdout.readline().decode()  # py-spy's first line: sampling began
        if "Sampling" not in started:
            raise RuntimeError(f"py-spy did not start: {started.strip()}")
        load = asyncio.run(http_load("profiled", function, payloads(events), 32, pids))
        spy.send_signal(signal.SIGINT)  # py-spy writes its output when interrupted
        said, _ = spy.communicate(timeout=60)
        if not out.exists():
            raise RuntimeError(f"py-spy wrote nothing: {said.decode()[-500:]}")
        return read_samples(out.read_text(), detail), load.cpu_per_event * 1e6


def print_profiles(profiles: dict[str, tuple[Counter[str], float]]) -> None:
    """One column per profiled library: share of samples and estimated us per event."""
    names = list(profiles)
    parts = sorted(
        {part for samples, _ in profiles.values() for part in samples},
        key=lambda part: -max(s[part] / max(1, sum(s.values())) for s, _ in profiles.values()),
    )
    print(f"{'':44}" + "".join(f" {name[:26]:>26}" for name in names))
    print(f"{'CPU per event (us), 32 connections':44}" + "".join(
        f" {cpu:>26.0f}" for _, cpu in profiles.values()
    ))  # fmt: skip
    for part in parts:
        cells = []
        for samples, cpu in profiles.values():
            share = samples[part] / max(1, sum(samples.values()))
            cells.append(f" {share:>12.0%} {share * cpu:>9.0f} us")
        print(f"{part:44}" + "".join(cells))
    print(f"{'samples':44}" + "".join(f" {sum(s.values()):>26}" for s, _ in profiles.values()))


def main(argv: Sequence[str] | None = None) -> int:
    """Profile this checkout (and ``--against DIR``), print the summary."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--events", type=int, default=20000, help="events sampled per profile")
    parser.add_argument("--against", type=Path, metavar="DIR", help="another checkout's shared/")
    parser.add_argument(
        "--env", action="append", default=[], metavar="K=V", help="extra function environment"
    )
    parser.add_argument(
        "--bare", action="store_true", help="profile the bare server (bare_publisher.py) too"
    )
    parser.add_argument(
        "--detail", metavar="PART", help="split PART (e.g. 'event loop') by innermost frame"
    )
    parser.add_argument(
        "--native",
        action="store_true",
        help="sample C frames too (py-spy --native): --detail then names the C function",
    )
    args = parser.parse_args(argv)
    extra = dict(item.split("=", 1) for item in args.env)
    libraries = {"this checkout": extra}
    if args.against:
        libraries[f"against {args.against}"] = {**extra, "PYTHONPATH": str(args.against.resolve())}
    with tempfile.TemporaryDirectory(prefix="stripe-bridge-profile-") as tmp:
        workdir = Path(tmp)
        with NatsServer(workdir / "nats") as nats_server:
            asyncio.run(provision_stream(nats_server.url))
            processes = {
                name: function_process(function_env(nats_server.url, **env), workdir)
                for name, env in libraries.items()
            }
            if args.bare:
                bare_env = {"NATS_URL": nats_server.url}
                bare = [sys.executable, str(BARE)]
                processes["bare server"] = FunctionProcess(
                    FUNCTION, bare_env, workdir, REPO_ROOT, command=bare
                )
            profiles = {
                name: profile(process, workdir, args.events, args.detail, args.native)
                for name, process in processes.items()
            }
    print(f"py-spy samples per part of the path (load average {os.getloadavg()[0]:.1f}):")
    print_profiles(profiles)
    return 0


if __name__ == "__main__":
    sys.exit(main())
