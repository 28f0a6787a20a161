"""The billing consumers as processes: ready once serving /metrics, or not waited on at all.

``ConsumerProcess`` waits for a consumer bound and consuming; ``StartingConsumer`` is one
whose start is the test: it may never get started (docs/billing.md).
"""

from __future__ import annotations

import os
import signal
import sys
import urllib.request
from pathlib import Path
from typing import Self

from prometheus_client.parser import text_string_to_metric_families
from stripe_bridge.ops.natsserver import free_port

from .openmeter_standin import IngestStandIn
from .processes import ManagedProcess
from .waiting import wait_until

#: Every long-running consumer, with the metric that shows it is bound and consuming.
READY = {
    "forward-openmeter": "stripe_bridge_openmeter_breaker_state",
    "project-tiers": "stripe_bridge_tiers_consumer_lag",
    "project-lifecycle": "stripe_bridge_lifecycle_consumer_lag",
    "count-usage": "stripe_bridge_usage_counter_partitions",
}
#: forward-openmeter needs an OpenMeter to talk to; nothing here reaches it.
_ENV = {
    "forward-openmeter": {
        "OPENMETER_URL": "http://127.0.0.1:9/",
        "OPENMETER_API_KEY": "om_test_key",
    }
}


class ConsumerProcess(ManagedProcess):
    """A billing consumer command as its own process, serving /metrics; ready once it does."""

    def __init__(
        self, command: str, args: list[str], env: dict[str, str], workdir: Path, ready: str
    ) -> None:
        super().__init__(workdir / f"{command}-{id(self)}.log")
        self.metrics_port = free_port()
        self.command = command
        self.ready = ready
        self.args = [sys.executable, "-m", "stripe_bridge.cli", command, *args]
        self.args += ["--metrics-port", str(self.metrics_port)]
        self.env = {**os.environ, **env}

    def metric(self, name: str) -> float | None:
        """An unlabelled sample from the process's /metrics (None if absent or not serving)."""
        try:
            with urllib.request.urlopen(
                f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=1
            ) as response:
                text = response.read().decode()
        except OSError:
            return None
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == name and not sample.labels:
                    return float(sample.value)
        return None

    def start(self, timeout: float = 20.0) -> Self:
        """Start and wait until its metrics endpoint shows the ``ready`` metric."""
        self._spawn(self.args, self.env)

        def serving() -> bool:
            self._check_alive()
            return self.metric(self.ready) is not None

        wait_until(serving, timeout, self.command)
        return self


class ForwarderProcess(ConsumerProcess):
    """``stripe-bridge forward-openmeter`` with fast test settings."""

    def __init__(self, nats_url: str, ingest: IngestStandIn, workdir: Path, **env: str) -> None:
        settings = {
            "OPENMETER_URL": ingest.url,
            "OPENMETER_API_KEY": ingest.api_key,
            "OPENMETER_BATCH_SIZE": "20",
            "OPENMETER_ACK_WAIT": "1",
            "OPENMETER_FETCH_WAIT": "0.2",
            "OPENMETER_MAX_REQUESTS_PER_SECOND": "1000",
        }
        super().__init__(
            "forward-openmeter",
            ["--nats-url", nats_url],
            {**settings, **env},
            workdir,
            ready="stripe_bridge_openmeter_breaker_state",
        )

    def crash(self) -> None:
        """SIGKILL: no drain, no acks, nothing flushed."""
        assert self.process is not None
        self.process.kill()
        self.process.wait(10)


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
