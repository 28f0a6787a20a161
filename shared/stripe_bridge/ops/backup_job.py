"""The scheduled backup: every stream and KV bucket exported, kept N times, copied to S3.

``export --all --dir ROOT`` writes ``ROOT/<UTC time>/``: one JSON Lines file per stream
(``backup.export_stream``; a KV bucket is its ``KV_<bucket>`` stream, so every revision
the bucket keeps is in it) and, last, ``manifest.json`` with each stream's configuration,
message count and bytes. A folder without a manifest is an unfinished backup: restores
and retention ignore it. ``import --all FOLDER`` creates each missing stream from its
saved configuration and imports its messages in their original order.

Retention keeps the newest ``keep`` finished backups (older ones, and unfinished ones
older than the newest finished one, are deleted) on the volume and under the S3 prefix.
Metrics go to the Pushgateway under ``job="stripe-bridge-backup"``, which
``pushgateway-gc`` (``job="stripe-bridge"`` only) never deletes.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Gauge, pushadd_to_gateway
from pydantic import BaseModel

from . import backup
from .backup import ExportedMessage, ImportCounts, export_stream, import_messages
from .natsfaults import retrying

MANIFEST = "manifest.json"
BACKUP_JOB = "stripe-bridge-backup"
_NAME_FORMAT = "%Y%m%dT%H%M%SZ"


class StreamBackup(BaseModel):
    """One stream in a backup: its configuration and what was written."""

    name: str
    config: dict[str, Any]
    messages: int
    bytes: int
    file: str


class BackupManifest(BaseModel):
    """``manifest.json``: written last, so its presence means the backup is complete."""

    created: datetime
    streams: list[StreamBackup]

    @property
    def bytes(self) -> int:
        """Bytes of every stream file."""
        return sum(s.bytes for s in self.streams)


def backup_name(moment: datetime) -> str:
    """A backup folder's name: its UTC start time, sortable."""
    return moment.astimezone(UTC).strftime(_NAME_FORMAT)


class BackupUnfinished(Exception):
    """An export --all run failed: its folder has no manifest, so nothing takes it for a
    backup (restores refuse it, retention deletes it once a newer backup finishes)."""


async def export_all(
    js: Any, root: Path, moment: datetime | None = None, required: Sequence[str] = ()
) -> Path:
    """Export every stream into a new folder under ``root``; return the folder.

    Each stream is read with its reader's retries (a leader change resumes after the last
    message written); a failure beyond them raises BackupUnfinished naming the folder. So
    does a stream list without a ``required`` stream: a node that lost its quorum has been
    seen to list no stream at all, which would have been a "complete" empty backup.
    """
    moment = moment or datetime.now(UTC)
    folder = root / backup_name(moment)
    folder.mkdir(parents=True, exist_ok=False)
    try:
        manifest = BackupManifest(
            created=moment, streams=await _export_streams(js, folder, required)
        )
    except Exception as exc:
        raise BackupUnfinished(
            f"backup {folder} unfinished, no manifest: {type(exc).__name__}: {exc}"
        ) from exc
    draft = folder / f"{MANIFEST}.partial"
    draft.write_text(manifest.model_dump_json(indent=2))
    draft.rename(folder / MANIFEST)
    return folder


async def _export_streams(js: Any, folder: Path, required: Sequence[str]) -> list[StreamBackup]:
    streams = []
    infos = await retrying(js.streams_info, backup.READ_RETRY_SECONDS)
    missing = set(required) - {info.config.name for info in infos}
    if missing:
        raise LookupError(
            f"the stream list lacks {', '.join(sorted(missing))}: a cluster without quorum "
            "lists nothing, or the stream was never provisioned (stripe-bridge provision)"
        )
    for info in sorted(infos, key=lambda i: i.config.name):
        name = info.config.name
        path = folder / f"{name}.jsonl"
        with path.open("w") as out:
            count = await export_stream(js, name, out.write)
        streams.append(
            StreamBackup(
                name=name,
                config=info.config.as_dict(),
                messages=count,
                bytes=path.stat().st_size,
                file=path.name,
            )
        )
    return streams


def read_manifest(folder: Path) -> BackupManifest:
    """The manifest of a finished backup (OSError/ValueError otherwise)."""
    return BackupManifest.model_validate_json((folder / MANIFEST).read_text())


def _messages(path: Path) -> Iterable[ExportedMessage]:
    with path.open() as lines:
        for line in lines:
            if line.strip():
                yield ExportedMessage.model_validate_json(line)


async def import_all(js: Any, folder: Path) -> dict[str, ImportCounts]:
    """Restore every stream of the backup in ``folder`` (creating missing streams)."""
    from nats.js.api import StreamConfig
    from nats.js.errors import NotFoundError

    manifest = read_manifest(folder)
    counts = {}
    for stream in manifest.streams:
        try:
            await retrying(partial(js.stream_info, stream.name), backup.READ_RETRY_SECONDS)
        except NotFoundError:
            config = StreamConfig.from_response(dict(stream.config))
            await retrying(partial(js.add_stream, config), backup.READ_RETRY_SECONDS)
        counts[stream.name] = await import_messages(
            js, stream.name, _messages(folder / stream.file)
        )
    return counts


def finished_backups(root: Path) -> list[Path]:
    """Finished backup folders under ``root``, oldest first."""
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and (p / MANIFEST).is_file())


def apply_retention(root: Path, keep: int) -> list[str]:
    """Delete all but the newest ``keep`` finished backups (and stale unfinished ones)."""
    finished = finished_backups(root)
    doomed = finished[:-keep] if keep > 0 else finished
    if finished:
        newest = finished[-1].name
        doomed += [
            p for p in root.iterdir() if p.is_dir() and p not in finished and p.name < newest
        ]
    for path in doomed:
        shutil.rmtree(path)
    return sorted(p.name for p in doomed)


class S3Copy:
    """Copies backups to an S3-compatible bucket (boto3) and applies retention there."""

    def __init__(self, bucket: str, prefix: str = "", endpoint_url: str | None = None) -> None:
        import boto3  # type: ignore[import-untyped]

        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.client = boto3.client("s3", endpoint_url=endpoint_url or None)

    def _key(self, *parts: str) -> str:
        return "/".join(p for p in (self.prefix, *parts) if p)

    def upload(self, folder: Path) -> int:
        """Upload one backup folder (manifest last); the bytes sent."""
        files = sorted(folder.iterdir(), key=lambda p: (p.name == MANIFEST, p.name))
        for path in files:
            self.client.upload_file(str(path), self.bucket, self._key(folder.name, path.name))
        return sum(p.stat().st_size for p in files)

    def backups(self) -> list[str]:
        """Finished backups in the bucket (names), oldest first."""
        names = set()
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=self._key("")):
            for item in page.get("Contents", []):
                *_, name, file = item["Key"].split("/")
                if file == MANIFEST:
                    names.add(name)
        return sorted(names)

    def apply_retention(self, keep: int) -> list[str]:
        """Delete all but the newest ``keep`` backups in the bucket."""
        finished = self.backups()
        doomed = finished[:-keep] if keep > 0 else finished
        for name in doomed:
            listed = self.client.list_objects_v2(Bucket=self.bucket, Prefix=self._key(name, ""))
            keys = [{"Key": item["Key"]} for item in listed.get("Contents", [])]
            if keys:
                self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": keys})
        return doomed


class BackupMetrics:
    """What one backup run pushes (gauges: a CronJob's process lives for one run)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.last_success = Gauge(
            "stripe_bridge_backup_last_success_timestamp_seconds",
            "When the last successful backup finished (Unix time).",
            registry=r,
        )
        self.last_failure = Gauge(
            "stripe_bridge_backup_last_failure_timestamp_seconds",
            "When the last failed backup run ended (Unix time).",
            registry=r,
        )
        self.success = Gauge(
            "stripe_bridge_backup_success",
            "1 if the last backup run succeeded, 0 if it failed.",
            registry=r,
        )
        self.bytes = Gauge(
            "stripe_bridge_backup_bytes", "Bytes written by the last successful backup.", registry=r
        )
        self.messages = Gauge(
            "stripe_bridge_backup_messages",
            "Messages exported by the last successful backup, by stream.",
            ["stream"],
            registry=r,
        )
        self.duration = Gauge(
            "stripe_bridge_backup_duration_seconds",
            "How long the last backup run took.",
            registry=r,
        )
        self.volume_used = Gauge(
            "stripe_bridge_backup_volume_used_bytes",
            "Bytes used on the backup volume after the run.",
            registry=r,
        )
        self.volume_size = Gauge(
            "stripe_bridge_backup_volume_size_bytes", "Size of the backup volume.", registry=r
        )

    def measure_volume(self, root: Path) -> None:
        """The volume's size and use (statvfs of ``root``)."""
        stats = os.statvfs(root)
        self.volume_size.set(stats.f_blocks * stats.f_frsize)
        self.volume_used.set((stats.f_blocks - stats.f_bfree) * stats.f_frsize)

    def succeeded(self, manifest: BackupManifest, seconds: float) -> None:
        """Record a successful run."""
        self.success.set(1)
        self.last_success.set(time.time())
        self.bytes.set(manifest.bytes)
        self.duration.set(seconds)
        for stream in manifest.streams:
            self.messages.labels(stream.name).set(stream.messages)

    def push(self, url: str, environment: str, failed: bool = False) -> None:
        """Push to the Pushgateway (POST: a failure keeps the last success's series)."""
        registry = self.registry
        if failed:
            registry = CollectorRegistry()
            for gauge in (self.success, self.last_failure, self.duration):
                registry.register(gauge)
        grouping = {"environment": environment} if environment else {}
        pushadd_to_gateway(url, BACKUP_JOB, registry, grouping_key=grouping, timeout=10)
