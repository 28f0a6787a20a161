"""``stripe-bridge forward-openmeter``: deliver usage events from JetStream to OpenMeter."""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from ..billing.openmeter import Forwarder, ForwarderSettings, OpenMeterAuthError
from ..billing.runner import Bound, run_until_stopped
from ..billing.usage import provision_usage_streams
from ..config import load_model
from .common import add_nats_arguments, add_usage_limit_argument, settings_from


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``forward-openmeter`` subcommand."""
    parser = subparsers.add_parser(
        "forward-openmeter",
        help="send usage events (USAGE stream) to OpenMeter's ingest API, at least once",
    )
    add_nats_arguments(parser)
    parser.add_argument("--metrics-port", type=int, help="serve Prometheus /metrics on this port")
    parser.add_argument("--batch-size", type=int, help="events per request ($OPENMETER_BATCH_SIZE)")
    parser.add_argument("--durable", help="consumer name ($OPENMETER_DURABLE, default openmeter)")
    parser.add_argument(
        "--no-provision", action="store_true", help="do not create the USAGE/USAGE_DLQ streams"
    )
    parser.add_argument(
        "--replicas",
        type=int,
        default=1,
        help="replicas of the USAGE/USAGE_DLQ streams it creates or updates (default 1)",
    )
    add_usage_limit_argument(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Forward until SIGTERM; exit 3 if connecting to NATS fails or OpenMeter refuses the
    key (401/403), 2 on bad config."""
    settings = settings_from(args)
    overrides: dict[str, Any] = {}
    if args.batch_size is not None:
        overrides["batch_size"] = args.batch_size
    if args.durable:
        overrides["durable"] = args.durable
    forwarder_settings = load_model(ForwarderSettings, **overrides)

    async def work(nc: Any, stop: asyncio.Event, bound: Bound) -> None:
        if not args.no_provision:
            await provision_usage_streams(nc.jetstream(), args.replicas, args.usage_max_bytes)
        forwarder = Forwarder(nc, forwarder_settings)
        await forwarder.run(stop, on_bound=lambda: bound(forwarder.metrics.registry))

    try:
        return asyncio.run(
            run_until_stopped(settings, work, "forward-openmeter", args.metrics_port)
        )
    except OpenMeterAuthError as exc:
        # The forwarder logged the refusal already: exit without a second line.
        return exc.exit_code
