"""``stripe-bridge project-tiers``: keep customers' tiers and entitlements in NATS KV."""

from __future__ import annotations

import argparse
import asyncio
import os
from pathlib import Path
from typing import Any

from ..billing.projector import TierProjector
from ..billing.runner import Bound, run_until_stopped
from ..billing.tiers import TierConfig
from ..config import ConfigError
from .common import add_consumer_arguments, add_nats_arguments, settings_from


def add_tiers_argument(parser: argparse.ArgumentParser) -> None:
    """``--tiers-file`` overriding BILLING_TIERS_FILE."""
    parser.add_argument(
        "--tiers-file",
        type=Path,
        default=os.environ.get("BILLING_TIERS_FILE") or None,
        help="YAML/JSON tier config (default: $BILLING_TIERS_FILE or built-in free/pro/teams)",
    )


def load_tiers(path: Path | None) -> TierConfig:
    """The tier config, or ConfigError with one line."""
    try:
        return TierConfig.load(path)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"tier config {path}: {str(exc).splitlines()[0]}") from None


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``project-tiers`` subcommand."""
    parser = subparsers.add_parser(
        "project-tiers", help="project subscription/entitlement events into the tiers KV bucket"
    )
    add_nats_arguments(parser)
    add_tiers_argument(parser)
    parser.add_argument("--durable", default="tiers", help="consumer name (default: tiers)")
    add_consumer_arguments(parser, "the BILLING_TIERS bucket")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Project until SIGTERM; exit 3 if connecting to NATS fails, 2 on bad config."""
    settings = settings_from(args)
    config = load_tiers(args.tiers_file)

    async def work(nc: Any, stop: asyncio.Event, bound: Bound) -> None:
        projector = TierProjector(
            nc,
            config,
            stream=settings.nats_stream,
            subject_prefix=settings.nats_subject_prefix,
            durable=args.durable,
            bucket_replicas=args.replicas,
        )
        await projector.run(stop, on_bound=lambda: bound(projector.metrics.registry))

    return asyncio.run(run_until_stopped(settings, work, "project-tiers", args.metrics_port))
