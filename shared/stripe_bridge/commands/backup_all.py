"""``export --all`` and ``import --all``: the scheduled backup of every stream and KV bucket."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

from ..config import ConfigError
from ..errors import CommandError
from ..exitcodes import ExitCode
from ..logsetup import configure_logging
from ..ops.backup_job import (
    BackupMetrics,
    BackupUnfinished,
    S3Copy,
    apply_retention,
    export_all,
    import_all,
    read_manifest,
)
from .common import on_jetstream, settings_from

log = logging.getLogger(__name__)


def add_backup_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``export --all`` options (the backup CronJob's command line)."""
    env = os.environ.get
    parser.add_argument("--all", action="store_true", help="every stream and KV bucket")
    parser.add_argument("--dir", type=Path, help="--all: where backups are kept (a volume)")
    parser.add_argument(
        "--keep", type=int, default=14, help="--all: finished backups to keep (default 14)"
    )
    parser.add_argument(
        "--s3-bucket", default=env("BACKUP_S3_BUCKET") or None, help="also copy to this bucket"
    )
    parser.add_argument("--s3-prefix", default=env("BACKUP_S3_PREFIX", ""))
    parser.add_argument(
        "--s3-endpoint",
        default=env("BACKUP_S3_ENDPOINT") or None,
        help="S3-compatible endpoint URL (default: AWS)",
    )
    parser.add_argument(
        "--pushgateway",
        default=env("PUSHGATEWAY_URL") or None,
        help="push backup metrics here ($PUSHGATEWAY_URL)",
    )
    parser.add_argument("--environment", default=env("ENVIRONMENT", ""))


def run_export_all(args: argparse.Namespace) -> int:
    """One backup run: export, copy, retention, metrics; UNAVAILABLE without NATS, else
    FAILED on any failure (one line either way)."""
    if args.dir is None:
        raise ConfigError("export --all needs --dir DIR")
    if args.keep < 1:
        raise ConfigError("--keep must be at least 1")
    settings = settings_from(args)
    configure_logging(settings.log_level, settings.log_format)
    metrics = BackupMetrics()
    started = time.monotonic()
    try:
        folder = on_jetstream(
            "export", settings, lambda js: _export(js, args.dir, settings.nats_stream)
        )
        manifest = read_manifest(folder)
        deleted = apply_retention(args.dir, args.keep)
        if args.s3_bucket:
            s3 = S3Copy(args.s3_bucket, args.s3_prefix, args.s3_endpoint)
            s3.upload(folder)
            deleted += [f"s3:{name}" for name in s3.apply_retention(args.keep)]
    except Exception as exc:
        metrics.success.set(0)
        metrics.last_failure.set(time.time())
        metrics.duration.set(time.monotonic() - started)
        _push(metrics, args, failed=True)
        if isinstance(exc, CommandError):
            raise
        raise CommandError(f"stripe-bridge export --all: {type(exc).__name__}: {exc}") from exc
    metrics.succeeded(manifest, time.monotonic() - started)
    metrics.measure_volume(args.dir)
    _push(metrics, args, failed=False)
    print(
        f"backup {folder}: {len(manifest.streams)} streams, "
        f"{sum(s.messages for s in manifest.streams)} messages, {manifest.bytes} bytes"
        f"{', copied to s3://' + args.s3_bucket if args.s3_bucket else ''}"
        f"; retention deleted {len(deleted)}",
        file=sys.stderr,
    )
    return ExitCode.OK


async def _export(js: Any, root: Path, stream: str) -> Path:
    """export_all, which must find the bridge's ``stream``; a failure of the volume (not of
    NATS) is FAILED, not worth a retry."""
    try:
        return await export_all(js, root, required=(stream,))
    except Exception as exc:
        cause = exc.__cause__ if isinstance(exc, BackupUnfinished) else exc
        # TimeoutError is an OSError too, but here it is a NATS request's.
        if isinstance(cause, OSError) and not isinstance(cause, TimeoutError):
            raise CommandError(f"stripe-bridge export --all: {exc}", ExitCode.FAILED) from exc
        raise


def _push(metrics: BackupMetrics, args: argparse.Namespace, failed: bool) -> None:
    if not args.pushgateway:
        return
    try:
        metrics.push(args.pushgateway, args.environment, failed=failed)
    except OSError as exc:
        # The backup itself is what matters; the missing-backup alert notices silence.
        log.warning("backup metrics not pushed: %s", type(exc).__name__)


def run_import_all(args: argparse.Namespace) -> int:
    """Restore every stream of one backup folder; print the counts per stream."""
    settings = settings_from(args)
    try:
        read_manifest(args.file)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{args.file}: not a finished backup: {type(exc).__name__}") from None

    async def restore(js: Any) -> dict[str, Any]:
        return await import_all(js, args.file)

    counts = on_jetstream("import", settings, restore)
    for name, count in counts.items():
        print(f"import {name}: published {count.published}, duplicate {count.duplicate}")
    return ExitCode.OK
