"""``stripe-bridge provision``: create or update the bridge's stream idempotently."""

from __future__ import annotations

import argparse
from typing import Any

from ..exitcodes import ExitCode
from ..streams import StreamSpec, dead_letter_spec, provision
from .common import add_nats_arguments, max_bytes, on_jetstream, settings_from


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``provision`` subcommand."""
    parser = subparsers.add_parser("provision", help="create or update the JetStream stream")
    add_nats_arguments(parser)
    parser.add_argument("--replicas", type=int, default=1, choices=(1, 3, 5))
    parser.add_argument("--max-age-days", type=float, default=30.0)
    parser.add_argument("--duplicate-window-minutes", type=float, default=120.0)
    parser.add_argument(
        "--max-bytes",
        type=max_bytes,
        default=-1,
        help="stream size limit, e.g. 40G (docs/nats.md, Sizing; a full stream refuses "
        "writes); -1: unlimited",
    )
    parser.add_argument(
        "--dead-letters",
        action="store_true",
        help="also STRIPE_DLQ, where STRIPE consumers put poison messages (docs/consumers.md)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Provision the stream and print what happened."""
    settings = settings_from(args)
    spec = StreamSpec.from_settings(
        settings,
        replicas=args.replicas,
        max_age_seconds=args.max_age_days * 86400,
        duplicate_window_seconds=args.duplicate_window_minutes * 60,
        max_bytes=args.max_bytes,
    )

    specs = [spec, dead_letter_spec(args.replicas)] if args.dead_letters else [spec]

    async def provision_all(js: Any) -> list[str]:
        return [await provision(js, one) for one in specs]

    results = on_jetstream("provision", settings, provision_all)
    for one, result in zip(specs, results, strict=True):
        print(f"stream {one.name} ({one.subject_prefix}.>, R{one.replicas}): {result}")
    return ExitCode.OK
