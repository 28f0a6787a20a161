"""Billing consumers starting while the cluster has no quorum: one line and exit 3."""

from __future__ import annotations

from pathlib import Path

import pytest
from stripe_bridge_testing.consumer_processes import READY, StartingConsumer, log_lines
from stripe_bridge_testing.natscluster import LocalNatsCluster


@pytest.mark.parametrize("command", sorted(READY))
def test_one_node_of_three_exits_3_in_one_line(
    command: str, cluster: LocalNatsCluster, tmp_path: Path
) -> None:
    cluster.stop_node(1)
    cluster.stop_node(2)
    # Connecting works (node 0 answers); the JetStream API has no quorum: every stream
    # info, stream or consumer creation times out or answers 503 until the budget ends.
    process = StartingConsumer(command, cluster.url(), tmp_path, NATS_START_TIMEOUT="4")
    try:
        assert process.wait(90) == 3
    finally:
        process.stop()
    lines = log_lines(process)
    assert len(lines) == 1, process.log()
    assert f"{command}: nats not answering at " in lines[0]
    assert "NATS_START_TIMEOUT=4s" in lines[0]
    assert cluster.passwords["admin"] not in process.log()
