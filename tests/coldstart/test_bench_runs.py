"""bench/bench_bridge.py keeps working as the library changes (figures are not checked).

Timing targets are never asserted (the benchmark prints them beside its baseline); this
only runs the smallest benchmark and checks that every measurement happened and that
every phase stored what it sent.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from stripe_bridge_testing.repo import REPO_ROOT

# The benchmark starts its own servers in a subprocess.
pytestmark = pytest.mark.servers


def test_the_smallest_benchmark_measures_everything(tmp_path: Path) -> None:
    out = tmp_path / "figures.json"
    command = [sys.executable, str(REPO_ROOT / "bench" / "bench_bridge.py"), "--quick"]
    command += ["--events", "100", "--cold-runs", "1", "--json", str(out)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stdout + result.stderr
    figures = json.loads(out.read_text())
    rows = {(load["name"], load["concurrency"]): load for load in figures["loads"]}
    for name in (
        "baseline js.publish",
        "bare HTTP -> js.publish",
        "bare, h11 + asyncio",
        "peer: Starlette + stripe lib",
        "bridge (memory idempotency)",
        "bridge, LOG_DELIVERIES=failures",
        "bridge (redis idempotency)",
    ):
        assert rows[(name, 1)]["events"] == 100, name
        assert rows[(name, 32)]["events"] == 100, name
        assert rows[(name, 32)]["rate"] > 0, name
        repeats = sorted(load["repeat"] for load in figures["loads"] if load["name"] == name)
        assert repeats == [0, 0, 1, 1], name  # --quick: 2 repeats at each concurrency
    ratios = figures["ratios"][
        "bridge (memory idempotency) / bare HTTP -> js.publish, concurrency 32"
    ]
    assert len(ratios) == 2 and all(ratio > 0 for ratio in ratios)
    assert "the median of 2 interleaved repeats" in result.stdout
    assert set(figures["cold"]) == {"this checkout", "without bytecode (no .pyc)"}
    assert figures["cold"]["this checkout"]["outside"][0] > 0
    billing = figures["billing_ready"]["this checkout"]
    assert set(billing) == {"billing_checkout", "billing_entitlements", "billing_usage"}
    assert all(seconds[0] > 0 for seconds in billing.values())
    phases = dict(figures["breakdowns"]["this checkout"]["phases"])
    assert "GET /readyz: NATS connect + stream lookup" in phases
    assert "cold start, process start -> first acknowledged event" in result.stdout
    assert "x the events/s of peer: Starlette + stripe lib" in result.stdout


def test_the_memory_store_benchmark_measures_both_ways(tmp_path: Path) -> None:
    out = tmp_path / "memory.json"
    command = [sys.executable, str(REPO_ROOT / "bench" / "bench_memory_store.py"), "--quick"]
    result = subprocess.run([*command, "--json", str(out)], capture_output=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    figures = json.loads(out.read_text())
    assert len(figures["store"]["rss_mib"]) == len(figures["function"]["rss_mib"]) == 4
    assert all(value > 0 for value in figures["function"]["rss_mib"])


def test_the_profile_charges_samples_to_parts_of_the_path() -> None:
    command = [sys.executable, "-m", "bench.profile_bridge", "--events", "300"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=REPO_ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    rows = {line[:44].strip(): line[44:].split() for line in result.stdout.splitlines()}
    assert int(rows["samples"][0]) > 0
    assert "uvicorn (HTTP protocol)" in rows
    assert "NATS client: publish, PubAck" in rows


def test_the_bridge_gives_the_event_loop_no_work_the_bare_server_does_not(
    tmp_path: Path,
) -> None:
    # Issue #20: tasks, timers and futures per webhook, counted by the loop itself. A task,
    # timer or callback added to the request path shows here (the bare server runs the
    # same uvicorn stack and NATS client, and none of the bridge's work).
    out = tmp_path / "loop.json"
    command = [sys.executable, "-m", "bench.loop_work", "--events", "200", "--no-strace"]
    result = subprocess.run(
        [*command, "--json", str(out)], capture_output=True, text=True, timeout=180, cwd=REPO_ROOT
    )
    assert result.returncode == 0, result.stdout + result.stderr
    counts = json.loads(out.read_text())
    for name in ("bridge", "bare"):
        alone = counts[name]["1"]
        assert alone["task RequestResponseCycle.run_asgi"] == 1.0, name  # one task a request
    bridge, bare = counts["bridge"]["1"], counts["bare"]["1"]
    for kind in ("task", "timer", "future"):
        # At concurrency 1 every request runs alone: the counts are the request's own
        # (a PubAck timer firing late, or a header timer, may add a hundredth).
        ours = sum(v for k, v in bridge.items() if k.startswith(kind))
        theirs = sum(v for k, v in bare.items() if k.startswith(kind))
        assert ours <= theirs + 0.05, (kind, bridge, bare)
    # Every call_soon of the bridge's request path is one the bare server makes too.
    assert {k for k in bridge if k.startswith("call_soon")} <= set(bare), (bridge, bare)
    # With 32 in flight the collector's young generation no longer runs every ~20
    # webhooks (``server.settle_heap``): counted runs, not times.
    loaded = counts["bridge"]["32"]
    assert loaded.get("gc generation 0 collections", 0.0) < 0.02, loaded


def test_the_profile_splits_a_part_and_profiles_the_bare_server() -> None:
    command = [sys.executable, "-m", "bench.profile_bridge", "--events", "300", "--bare"]
    command += ["--detail", "event loop"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=180, cwd=REPO_ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert "bare server" in lines[1]
    samples = next(line for line in lines if line.startswith("samples")).split()[1:]
    assert len(samples) == 2 and all(int(count) > 0 for count in samples)
    assert any(line.startswith("event loop: ") for line in lines)


def test_the_watch_cost_benchmark_measures_both_phases() -> None:
    command = [sys.executable, "-m", "bench.bench_watch_cost", "--customers", "5"]
    command += ["--repeats", "2", "--phase-seconds", "0.5"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=180, cwd=REPO_ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("per 1,000 consumers:") == 3
    assert "watched  server CPU" in result.stdout and "none     server CPU" in result.stdout
