"""bench/bench_counter.py keeps working as the library changes (figures never checked)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from stripe_bridge_testing.repo import REPO_ROOT

# The benchmark starts its own nats-server in a subprocess.
pytestmark = pytest.mark.servers


def test_the_counter_benchmark_counts_every_record(tmp_path: Path) -> None:
    out = tmp_path / "figures.json"
    command = [sys.executable, "-m", "bench.bench_counter", "--records", "300", "--repeats", "2"]
    command += ["--interleave", "--json", str(out)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=REPO_ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    figures = json.loads(out.read_text())
    (runs,) = figures["runs"].values()
    assert [run["counted"] for run in runs] == [300, 300]
    assert "records/s" in result.stdout and "load average" in result.stdout


def test_the_partitions_benchmark_counts_every_record_once_across_partitions(
    tmp_path: Path,
) -> None:
    """``--partitions 2``: the partitions' counted records add up to every record (the
    bench itself refuses a run whose sum differs)."""
    out = tmp_path / "figures.json"
    command = [sys.executable, "-m", "bench.bench_counter", "--records", "300", "--repeats", "2"]
    command += ["--partitions", "2", "--json", str(out)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=REPO_ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    runs = json.loads(out.read_text())["runs"]
    assert sorted(runs) == ["this checkout", "this checkout, 2 partitions"]
    assert [run["counted"] for figures in runs.values() for run in figures] == [300] * 4
    assert "2 partitions over one counter" in result.stdout
