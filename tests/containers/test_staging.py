"""The staging run, through scripts/staging as a person runs it: up, test, down.

testing/stripe_bridge_testing/staging.py says what runs and what ``test`` checks: every served event
type exactly once in STRIPE, every usage record exactly once at the OpenMeter stand-in,
every panel of the bridge and billing dashboards non-empty in the stack's Prometheus, with
one NATS server stopped (and started again) in the middle of the traffic.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from stripe_bridge_testing.podman import RUN_ID
from stripe_bridge_testing.repo import REPO_ROOT

pytestmark = [pytest.mark.container, pytest.mark.servers, pytest.mark.timeout(600)]


def staging(action: str, workdir: Path) -> subprocess.CompletedProcess[str]:
    """``scripts/staging ACTION --dir WORKDIR`` (with this run's container label)."""
    return subprocess.run(
        [str(REPO_ROOT / "scripts" / "staging"), action, "--dir", str(workdir)],
        capture_output=True,
        text=True,
        timeout=500,
        env={**os.environ, "STRIPE_BRIDGE_RUN_ID": RUN_ID},
    )


def test_staging_up_test_down(function_image: str, tmp_path: Path) -> None:
    assert function_image.startswith("localhost/stripe-bridge:")
    workdir = tmp_path / "staging"
    try:
        up = staging("up", workdir)
        assert up.returncode == 0, up.stdout + up.stderr
        run = staging("test", workdir)
        print(run.stdout)
        assert run.returncode == 0, run.stdout + run.stderr
        assert "usage records once" in run.stdout and "every panel" in run.stdout
    finally:
        down = staging("down", workdir)
    assert down.returncode == 0, down.stderr
