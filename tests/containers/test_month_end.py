"""The month-end load test (bench/bench_month_end.py) in small: it counts and reports.

300 Stripe events and 3,000 usage records through the whole staging stack, with the
OpenMeter stand-in's rate limit low enough that the forwarder meets 429s: the bench must
exit 0 (nothing lost, duplicated, refused or dead-lettered, every 429's Retry-After
honoured) and report every figure issue #20 asks for.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from stripe_bridge_testing.podman import RUN_ID
from stripe_bridge_testing.repo import REPO_ROOT

pytestmark = [pytest.mark.container, pytest.mark.servers, pytest.mark.timeout(900)]


def test_month_end_burst_counts_nothing_lost_or_duplicated(
    function_image: str, tmp_path: Path
) -> None:
    out = tmp_path / "month-end.json"
    options = "--events 300 --rate 50 --openmeter-rate-limit 2 --max-seconds 120"
    run = subprocess.run(
        [sys.executable, "-m", "bench.bench_month_end", *options.split(), "--json", str(out)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=850,
        env={**os.environ, "STRIPE_BRIDGE_RUN_ID": RUN_ID},
    )
    print(run.stdout)
    assert run.returncode == 0, run.stdout + run.stderr[-3000:]
    figures = json.loads(out.read_text())
    assert figures["sent"]["stripe_events"] == 300
    assert figures["sent"]["usage_records"] == 3000
    once = figures["exactly_once"]
    for where in ("STRIPE", "USAGE", "openmeter"):
        assert once[where]["once"] == once[where]["expected"] > 0, once[where]
        assert once[where]["lost"] == once[where]["duplicated"] == 0, once[where]
    assert set(once["dead_letters"].values()) == {0}
    assert figures["drained"]
    assert figures["openmeter"]["rate_limited_429"] > 0
    assert figures["openmeter"]["early_retries"] == 0
    for kind in ("stripe", "usage"):
        latency = figures["webhook_latency_ms"][kind]
        assert 0 < latency["p50"] <= latency["p99"] <= latency["max"]
    for kind in ("usage", "lifecycle"):
        delay = figures["webhook_to_openmeter_s"][kind]
        assert 0 < delay["p50"] <= delay["p99"] <= delay["max"]
    assert figures["accepted_per_s"]["stripe_events"] > 0
    lags = figures["lag"]
    consumers = {"STRIPE/tiers", "STRIPE/lifecycle", "USAGE/openmeter", "USAGE/ephemeral usage.*"}
    assert consumers <= set(lags), lags
    assert all(lag["drained_after"] is not None for lag in lags.values()), lags
    assert lags["USAGE/openmeter"]["peak"] > 0
    containers = figures["containers"]
    for name in ("nats-0", "nats-1", "nats-2", "forward-openmeter", "stripe-invoice-paid"):
        use = containers[name]
        assert use["cpu_mean"] > 0 and use["cpu_idle"] >= 0 and use["rss_peak_mib"] > 1, name
    assert all(ms is not None and ms > 0 for ms in figures["cpu_ms_per_item"].values())
    assert figures["bytes_per_message"]["STRIPE"] > figures["bytes_per_message"]["USAGE"] > 0
