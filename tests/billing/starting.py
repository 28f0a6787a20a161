"""The four billing consumers as processes that may never get started (docs/billing.md)."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

from stripe_bridge_testing.processes import ManagedProcess

from .conftest import ConsumerProcess

#: Every long-running consumer, with the metric that shows it is bound and consuming.
READY = {
    "forward-openmeter": "stripe_bridge_openmeter_breaker_state",
    "project-tiers": "stripe_bridge_tiers_consumer_lag",
    "project-lifecycle": "stripe_bridge_lifecycle_consumer_lag",
    "count-usage": "stripe_bridge_usage_counter_lag",
}
#: forward-openmeter needs an OpenMeter to talk to; nothing here reaches it.
_ENV = {
    "forward-openmeter": {
        "OPENMETER_URL": "http://127.0.0.1:9/",
        "OPENMETER_API_KEY": "om_test_key",
    }
}


class StartingConsumer(ManagedProcess):
    """``stripe-bridge COMMAND --nats-url URL``, not waited on: its start is the test."""

    def __init__(self, command: str, nats_url: str, workdir: Path, **env: str) -> None:
        super().__init__(workdir / f"{command}.log")
        self.command = command
        args = [sys.executable, "-m", "stripe_bridge.cli", command, "--nats-url", nats_url]
        self._spawn(args, {**os.environ, **_ENV.get(command, {}), **env})

    def wait(self, timeout: float) -> int:
        """The exit code, within ``timeout`` seconds (TimeoutExpired otherwise)."""
        assert self.process is not None
        return self.process.wait(timeout)

    def terminate(self) -> None:
        """SIGTERM."""
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)


def consumer(command: str, nats_url: str, workdir: Path) -> ConsumerProcess:
    """``command`` as a ConsumerProcess, ready once its consumer is bound."""
    return ConsumerProcess(
        command, ["--nats-url", nats_url], _ENV.get(command, {}), workdir, ready=READY[command]
    )


def log_lines(process: ManagedProcess) -> list[str]:
    """The non-empty lines the process printed."""
    return [line for line in process.log().splitlines() if line.strip()]
