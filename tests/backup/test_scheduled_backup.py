"""The backup CronJob's command against real nats-server, a real Pushgateway and moto's S3
server: copies, retention on the volume and in the bucket, metrics on success and failure."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from stripe_bridge.cli import main
from stripe_bridge.exitcodes import ExitCode
from stripe_bridge.ops.backup_job import BACKUP_JOB, MANIFEST, apply_retention, backup_name
from stripe_bridge.ops.natsserver import NatsServer, free_port
from stripe_bridge.push import stale_groups
from stripe_bridge_testing.processes import PushgatewayServer
from stripe_bridge_testing.s3_standin import S3StandIn
from stripe_bridge_testing.waiting import wait_until

from ..billing.sequences import lifecycle
from ..billing.test_projector import publish_deliveries

BUCKET = "nats-backups"


@pytest.fixture
def s3(monkeypatch: pytest.MonkeyPatch) -> Iterator[S3StandIn]:
    """The S3 stand-in with an empty bucket; boto3 in this process pointed at it."""
    with S3StandIn() as server:
        server.client().create_bucket(Bucket=BUCKET)
        for name, value in server.env.items():
            monkeypatch.setenv(name, value)
        yield server


def pushed(url: str) -> dict[str, float]:
    """The backup group's samples on the Pushgateway, by metric name."""
    data = httpx.get(f"{url}/api/v1/metrics", timeout=5).json()["data"]
    found = {}
    for group in data:
        if group["labels"].get("job") != BACKUP_JOB:
            continue
        assert group["labels"]["environment"] == "staging"
        for name, family in group.items():
            if isinstance(family, dict) and family.get("metrics"):
                found[name] = float(family["metrics"][0]["value"])
    return found


def test_backup_runs_copy_keep_n_and_push_metrics(
    stream: NatsServer, s3: S3StandIn, pushgateway: PushgatewayServer, tmp_path: Path
) -> None:
    asyncio.run(publish_deliveries(stream.url, lifecycle()))
    root = tmp_path / "volume"
    args = ["export", "--all", "--dir", str(root), "--keep", "2", "--nats-url", stream.url]
    args += ["--s3-bucket", BUCKET, "--s3-prefix", "staging", "--s3-endpoint", s3.url]
    args += ["--pushgateway", pushgateway.url, "--environment", "staging"]
    names = []
    for _ in range(3):
        assert main(args) == 0
        names.append(sorted(p.name for p in root.iterdir())[-1])
        # Folder names have one-second resolution; the next run must get a new one.
        wait_until(lambda: backup_name(datetime.now(UTC)) != names[-1], 10, "the next second")
    assert sorted(p.name for p in root.iterdir()) == names[1:]
    keys = [o["Key"] for o in s3.client().list_objects_v2(Bucket=BUCKET)["Contents"]]
    assert sorted({k.split("/")[1] for k in keys}) == names[1:]
    assert f"staging/{names[-1]}/{MANIFEST}" in keys
    assert f"staging/{names[-1]}/STRIPE.jsonl" in keys
    ok = pushed(pushgateway.url)
    assert ok["stripe_bridge_backup_success"] == 1
    assert ok["stripe_bridge_backup_bytes"] > 0
    assert (
        0
        < ok["stripe_bridge_backup_volume_used_bytes"]
        <= ok["stripe_bridge_backup_volume_size_bytes"]
    )
    # pushgateway-gc removes only the bridge's own groups: the daily push stays.
    assert stale_groups(pushgateway.url, older_than=-3600) == []

    # NATS unreachable: the run fails, says so, and keeps the last success's time.
    down = [*args[:-8], "--nats-url", f"nats://127.0.0.1:{free_port()}"]
    down += ["--pushgateway", pushgateway.url, "--environment", "staging"]
    assert main(down) == ExitCode.UNAVAILABLE
    failed = pushed(pushgateway.url)
    assert failed["stripe_bridge_backup_success"] == 0
    assert (
        failed["stripe_bridge_backup_last_success_timestamp_seconds"]
        == (ok["stripe_bridge_backup_last_success_timestamp_seconds"])
    )
    assert failed["stripe_bridge_backup_last_failure_timestamp_seconds"] > 0


def test_retention_keeps_the_newest_finished_backups(tmp_path: Path) -> None:
    start = datetime(2026, 1, 1, 2, tzinfo=UTC)
    for day in range(5):
        folder = tmp_path / backup_name(start + timedelta(days=day))
        folder.mkdir()
        if day != 2:  # day 2's run died before its manifest
            (folder / MANIFEST).write_text("{}")
    unfinished_now = tmp_path / backup_name(start + timedelta(days=9))
    unfinished_now.mkdir()  # a run in progress right now
    deleted = apply_retention(tmp_path, keep=2)
    assert deleted == [backup_name(start + timedelta(days=d)) for d in (0, 1, 2)]
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        backup_name(start + timedelta(days=3)),
        backup_name(start + timedelta(days=4)),
        unfinished_now.name,
    ]


def test_a_backup_volume_problem_is_failed_not_unavailable(
    stream: NatsServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Not NATS's fault, so not "worth a retry" (3): here the volume path is a plain file.
    volume = tmp_path / "volume"
    volume.write_text("not a directory")
    assert main(["export", "--all", "--dir", str(volume), "--nats-url", stream.url]) == 1
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("stripe-bridge export --all: ") and str(volume) in line


def test_a_stream_list_without_the_bridges_stream_is_no_backup(
    nats_server: NatsServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A 3-node cluster's last node, its quorum just lost, once listed no stream at all and
    # the run wrote "0 streams" with a manifest: an empty backup that looked finished.
    # Without the bridge's STRIPE in the list the run is unfinished, loudly.
    backups = tmp_path / "backups"
    argv = ["export", "--all", "--dir", str(backups), "--nats-url", nats_server.url]
    assert main(argv) == ExitCode.UNAVAILABLE
    (line,) = capsys.readouterr().err.strip().splitlines()
    (folder,) = backups.iterdir()
    assert not (folder / MANIFEST).exists()
    assert f"backup {folder} unfinished, no manifest: " in line
    assert "the stream list lacks STRIPE" in line
