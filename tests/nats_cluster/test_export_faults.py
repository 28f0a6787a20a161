"""Reading a stream while its leader dies, on a real 3-node cluster: the reader recreates its
consumer after the last message it read, so an export is the stream, exactly."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path

import pytest
from stripe_bridge.cli import main
from stripe_bridge.exitcodes import ExitCode
from stripe_bridge.ops import backup
from stripe_bridge.ops.backup import ExportedMessage, iter_stream
from stripe_bridge.ops.backup_job import MANIFEST
from stripe_bridge_testing.deliveries import stream_messages
from stripe_bridge_testing.natscluster import LocalNatsCluster
from stripe_bridge_testing.waiting import wait_until

from .conftest import STREAM, connect

#: Several pull batches (256 each), so the kill lands mid-export.
EVENTS = 1200
KILL_AFTER = 300


async def fill(cluster: LocalNatsCluster, events: int = EVENTS) -> None:
    """``events`` messages with distinct ids and bodies."""
    nc = await connect(cluster)
    try:
        js = nc.jetstream()
        for i in range(events):
            body = json.dumps({"id": f"evt_{i:05}", "pad": "x" * 400}).encode()
            await js.publish(
                "stripe.test.invoice.paid", body, headers={"Nats-Msg-Id": f"evt_{i:05}"}
            )
    finally:
        await nc.close()


@pytest.mark.parametrize("victim", ["stream leader", "consumer leader"])
async def test_a_read_survives_a_node_kill_and_matches_the_stream(
    victim: str, cluster: LocalNatsCluster, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "stripe_bridge.ops.backup")
    await fill(cluster)
    stored = await stream_messages(cluster.url(nodes=[0]), STREAM)
    nc = await connect(cluster)
    lines: list[str] = []
    try:
        js = nc.jetstream()
        async with iter_stream(js, STREAM) as messages:
            async for msg in messages:
                lines.append(ExportedMessage.from_msg(msg).model_dump_json())  # as export does
                if len(lines) == KILL_AFTER:
                    # SIGKILL, no step-down. The reader's ephemeral consumer lives on one
                    # node, often not the stream leader's: killing that node loses it.
                    if victim == "stream leader":
                        node = (await js.stream_info(STREAM)).cluster.leader
                    else:
                        (consumer,) = await js.consumers_info(STREAM)
                        node = consumer.cluster.leader
                    cluster.kill_node(cluster.index_of(node))
            consumers = messages.consumers
    finally:
        await nc.close()
    if victim == "consumer leader":
        assert consumers > 1  # recreated after the last message read
        assert "reading STRIPE: resuming after seq" in caplog.text
    exported = [ExportedMessage.model_validate_json(line) for line in lines]
    assert [m.seq for m in exported] == list(range(1, EVENTS + 1))  # none skipped, none twice
    assert [(m.seq, m.subject, m.headers, m.data) for m in stored] == [
        (m.seq, m.subject, m.headers, m.payload()) for m in exported
    ]


def test_export_all_without_quorum_fails_in_one_line_and_leaves_no_manifest(
    cluster: LocalNatsCluster,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    asyncio.run(fill(cluster, 10))
    cluster.stop_node(1)
    cluster.stop_node(2)
    # The last node notices it lost quorum (its health check fails) within seconds.
    wait_until(lambda: not cluster.healthz(0), 60, "node 0 without quorum")
    monkeypatch.setattr(backup, "READ_RETRY_SECONDS", 2.0)  # the retries, shortened
    backups = tmp_path / "backups"
    argv = ["export", "--all", "--dir", str(backups), "--nats-url", cluster.url()]
    assert main(argv) == ExitCode.UNAVAILABLE
    err = capsys.readouterr().err
    (folder,) = backups.iterdir()
    assert not (folder / MANIFEST).exists()
    (line,) = err.strip().splitlines()
    assert line.startswith("stripe-bridge export: ")
    assert f"backup {folder} unfinished, no manifest: " in line
    assert cluster.passwords["admin"] not in err
