"""bench/bench_entitlements.py keeps working as the library changes (figures never checked)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from stripe_bridge_testing.repo import REPO_ROOT

# The benchmark starts its own nats-server in a subprocess.
pytestmark = pytest.mark.servers


def test_the_entitlements_benchmark_measures_every_row(tmp_path: Path) -> None:
    out = tmp_path / "figures.json"
    command = [sys.executable, "-m", "bench.bench_entitlements"]
    command += ["--repeats", "2", "--checks", "500", "--ops", "20", "--held", "0,50"]
    command += ["--json", str(out)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=REPO_ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    rows = {row["name"]: row for row in json.loads(out.read_text())["rows"]}
    assert set(rows) == {
        "raw kv.get",
        "client.check",
        "raw kv.update (CAS)",
        "client.reserve",
        "propagation kv.put -> check",
        "raw kv.get x16",
        "function /v1/check x16",
        "reserve, 0 held",
        "reserve, 50 held",
    }
    assert all(row["rate"] > 0 for row in rows.values())
    assert rows["client.check"]["ops"] == 500 and rows["reserve, 50 held"]["ops"] == 20
