"""``stripe-bridge pushgateway-gc``: delete Pushgateway groups of instances that are gone.

Every bridge process keeps its group when it exits (see docs/observability.md); a live one
re-pushes at least every minute. Run this from a CronJob with ``--older-than`` well above
that heartbeat and the Prometheus scrape interval.
"""

from __future__ import annotations

import argparse
import os

from ..errors import CommandError
from ..exitcodes import ExitCode
from ..ops.backup import parse_duration
from ..push import PushgatewayError, delete_group, stale_groups
from ..redact import redact_url


def duration(text: str) -> float:
    """Seconds in ``90s``, ``15m``, ``1h`` or ``2d``; argparse error otherwise."""
    try:
        return parse_duration(text).total_seconds()
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``pushgateway-gc`` subcommand."""
    parser = subparsers.add_parser(
        "pushgateway-gc", help="delete the bridge's Pushgateway groups not pushed for a while"
    )
    parser.add_argument("--url", default=os.environ.get("PUSHGATEWAY_URL"), help="Pushgateway")
    parser.add_argument(
        "--older-than", type=duration, default=duration("1h"), help="age of last push (1h)"
    )
    parser.add_argument(
        "--environment",
        default=os.environ.get("ENVIRONMENT"),
        help="only this environment's groups (default: $ENVIRONMENT; unset: every group)",
    )
    parser.add_argument("--dry-run", action="store_true", help="only list what would go")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Delete (or list) stale groups; exit CONFIG without a URL, UNAVAILABLE if it fails."""
    if not args.url:
        raise CommandError(
            "stripe-bridge pushgateway-gc: set --url or PUSHGATEWAY_URL", ExitCode.CONFIG
        )
    try:
        groups = stale_groups(args.url, args.older_than, args.environment)
        for group in groups:
            labels = " ".join(f"{k}={v}" for k, v in sorted(group.labels.items()))
            if not args.dry_run:
                delete_group(args.url, group)
            print(f"{'would delete' if args.dry_run else 'deleted'} {labels}")
    except PushgatewayError as exc:
        where = redact_url(args.url)
        raise CommandError(f"stripe-bridge pushgateway-gc: {where}: {exc}", exc.exit_code) from exc
    return ExitCode.OK
