"""Every billing consumer starts the same way: a bounded wait for NATS, then exit 3 in one
line; SIGTERM honoured at any moment; a clean stop logs no warning (docs/billing.md)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from stripe_bridge.ops.natsserver import NatsServer, free_port
from stripe_bridge_testing.consumer_processes import READY, StartingConsumer, consumer, log_lines
from stripe_bridge_testing.waiting import wait_until

COMMANDS = sorted(READY)


@pytest.mark.parametrize("command", COMMANDS)
def test_nats_unreachable_exits_3_in_one_line_within_the_budget(
    command: str, tmp_path: Path
) -> None:
    unused = f"nats://127.0.0.1:{free_port()}"
    started = time.monotonic()
    process = StartingConsumer(command, unused, tmp_path, NATS_START_TIMEOUT="2")
    try:
        # Generous for a loaded machine's interpreter start; the budget itself is 2 s.
        assert process.wait(60) == 3
    finally:
        process.stop()
    lines = log_lines(process)
    assert len(lines) == 1, process.log()
    assert f"{command}: nats unreachable at {unused}" in lines[0]
    assert "NATS_START_TIMEOUT=2s" in lines[0]
    assert time.monotonic() - started < 60


@pytest.mark.parametrize("command", COMMANDS)
def test_sigterm_while_waiting_for_nats_exits_promptly(command: str, tmp_path: Path) -> None:
    unused = f"nats://127.0.0.1:{free_port()}"
    process = StartingConsumer(
        command, unused, tmp_path, NATS_START_TIMEOUT="600", LOG_LEVEL="DEBUG"
    )
    try:
        # A refused connection attempt is logged (at debug): it is in the connect wait.
        wait_until(lambda: "ConnectionRefusedError" in process.log(), 60, "a connect attempt")
        process.terminate()
        assert process.wait(10) == 0
    finally:
        process.stop()
    assert "Traceback" not in process.log()
    assert f"{command} stopped while starting" in process.log()


@pytest.mark.parametrize("command", COMMANDS)
def test_clean_sigterm_logs_no_warning(command: str, stream: NatsServer, tmp_path: Path) -> None:
    process = consumer(command, stream.url, tmp_path).start(timeout=60)
    assert process.stop() == 0
    assert f"{command} stopped" in process.log()
    assert "WARNING" not in process.log()
    assert "Traceback" not in process.log()


@pytest.mark.parametrize("command", ["project-tiers", "project-lifecycle"])
def test_a_missing_stream_exits_3_in_one_line(
    command: str, nats_server: NatsServer, tmp_path: Path
) -> None:
    # STRIPE was never provisioned: waiting does not help, so no waiting for the budget.
    process = StartingConsumer(command, nats_server.url, tmp_path, NATS_START_TIMEOUT="600")
    try:
        assert process.wait(60) == 3
    finally:
        process.stop()
    (line,) = log_lines(process)
    assert f"{command}: nats at {nats_server.url} refused the start: NotFoundError" in line
    assert "stream not found" in line
