"""``stripe-bridge project-lifecycle``: OpenMeter lifecycle events from the billing events."""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from ..billing.lifecycle_projector import LifecycleProjector
from ..billing.runner import Bound, run_until_stopped
from ..billing.usage import provision_usage_streams
from .common import (
    add_consumer_arguments,
    add_nats_arguments,
    add_usage_limit_argument,
    settings_from,
)


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``project-lifecycle`` subcommand."""
    parser = subparsers.add_parser(
        "project-lifecycle",
        help="turn subscription/invoice events into OpenMeter lifecycle events (via USAGE)",
    )
    add_nats_arguments(parser)
    parser.add_argument("--durable", default="lifecycle", help="consumer name (default: lifecycle)")
    add_consumer_arguments(parser, "the USAGE streams and the BILLING_LIFECYCLE bucket")
    add_usage_limit_argument(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Project until SIGTERM; exit 3 if connecting to NATS fails, 2 on bad config."""
    settings = settings_from(args)

    async def work(nc: Any, stop: asyncio.Event, bound: Bound) -> None:
        # The events go into USAGE, which forward-openmeter may not have created yet.
        await provision_usage_streams(nc.jetstream(), args.replicas, args.usage_max_bytes)
        projector = LifecycleProjector(
            nc,
            stream=settings.nats_stream,
            subject_prefix=settings.nats_subject_prefix,
            durable=args.durable,
            bucket_replicas=args.replicas,
        )
        await projector.run(stop, on_bound=lambda: bound(projector.metrics.registry))

    return asyncio.run(run_until_stopped(settings, work, "project-lifecycle", args.metrics_port))
