"""``stripe-bridge count-usage``: usage per customer, meter and window into NATS KV."""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from ..billing.runner import Bound, run_until_stopped
from ..billing.usage import provision_usage_streams
from ..billing.usage_counter import DEFAULT_DEDUP_HORIZON_DAYS, UsageCounter
from ..billing.usage_partitions import Partition
from ..config import ConfigError
from .common import (
    add_consumer_arguments,
    add_nats_arguments,
    add_usage_limit_argument,
    settings_from,
)
from .project_tiers import add_tiers_argument, load_tiers


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``count-usage`` subcommand."""
    parser = subparsers.add_parser(
        "count-usage", help="count usage records (USAGE stream) per customer/meter/window in KV"
    )
    add_nats_arguments(parser)
    add_tiers_argument(parser)
    parser.add_argument("--name", default="counter", help="checkpoint name (default: counter)")
    parser.add_argument(
        "--dedup-horizon-days",
        type=float,
        default=DEFAULT_DEDUP_HORIZON_DAYS,
        help="a record id is counted once over this many days (default: %(default)g, "
        "OpenMeter's example dedupe expiration); keep it at least OpenMeter's",
    )
    parser.add_argument(
        "--partitions",
        type=int,
        default=1,
        help="counters splitting the customers between them, one process per partition "
        "(default 1; docs/billing.md, count-usage)",
    )
    parser.add_argument(
        "--partition",
        type=int,
        default=0,
        help="which of the --partitions this process counts, 0..N-1 (default 0; partition 0 "
        "also dead-letters unreadable records)",
    )
    add_consumer_arguments(parser, "the USAGE streams and the usage buckets")
    add_usage_limit_argument(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Count until SIGTERM; exit 3 if connecting to NATS fails, 2 on bad config."""
    settings = settings_from(args)
    config = load_tiers(args.tiers_file)
    try:
        partition = Partition(args.partition, args.partitions).check()
    except ValueError as exc:
        raise ConfigError(f"--partition: {exc}") from None

    async def work(nc: Any, stop: asyncio.Event, bound: Bound) -> None:
        await provision_usage_streams(nc.jetstream(), args.replicas, args.usage_max_bytes)
        counter = UsageCounter(
            nc,
            config,
            name=args.name,
            bucket_replicas=args.replicas,
            dedup_horizon_days=args.dedup_horizon_days,
            partition=partition,
        )
        await counter.run(stop, on_bound=lambda: bound(counter.metrics.registry))

    return asyncio.run(run_until_stopped(settings, work, "count-usage", args.metrics_port))
