"""bench/bench_entitlements.py keeps working as the library changes (figures never checked)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from ..helpers import REPO_ROOT

# The benchmark starts its own nats-server and function in a subprocess.
pytestmark = pytest.mark.servers


def test_the_entitlements_benchmark_measures_all_three(tmp_path: Path) -> None:
    out = tmp_path / "figures.json"
    command = [sys.executable, str(REPO_ROOT / "bench" / "bench_entitlements.py")]
    command += ["--checks", "40", "--concurrency", "4", "--json", str(out)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    rows = {row["name"]: row for row in json.loads(out.read_text())}
    assert set(rows) == {"raw kv.get (baseline)", "/v1/check", "/v1/check reserve"}
    assert all(row["checks"] == 40 and row["rate"] > 0 for row in rows.values())
