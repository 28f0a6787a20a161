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


def test_the_watch_cost_benchmark_measures_both_phases() -> None:
    command = [sys.executable, "-m", "bench.bench_watch_cost", "--customers", "5"]
    command += ["--repeats", "2", "--phase-seconds", "0.5"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=180, cwd=REPO_ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("per 1,000 consumers:") == 3
    assert "watched  server CPU" in result.stdout and "none     server CPU" in result.stdout
