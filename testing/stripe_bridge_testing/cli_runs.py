"""``stripe-bridge`` commands run as the operator runs them: a child process of this Python."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def cli(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    """Run ``stripe-bridge <args>`` to completion, capturing its output."""
    return subprocess.run(
        [sys.executable, "-m", "stripe_bridge.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def cli_process(*args: str, stdout: Path) -> subprocess.Popen[bytes]:
    """Start ``stripe-bridge <args>`` in the background, its output going to ``stdout``."""
    with stdout.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "stripe_bridge.cli", *args],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
