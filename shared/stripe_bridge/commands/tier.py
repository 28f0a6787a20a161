"""``stripe-bridge tier CUSTOMER_ID``: a customer's current tier and the event that set it."""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from typing import Any

from ..billing.projector import read_state
from ..billing.tiers import TIERS_BUCKET, Cause, CustomerState
from ..exitcodes import ExitCode
from .common import add_nats_arguments, on_jetstream, settings_from


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``tier`` subcommand."""
    parser = subparsers.add_parser("tier", help="show a customer's tier and why")
    add_nats_arguments(parser)
    parser.add_argument("customer_id", metavar="CUSTOMER_ID", help="Stripe customer id (cus_...)")
    parser.add_argument("--json", action="store_true", help="print the stored state as JSON")
    parser.set_defaults(func=run)


def _cause(cause: Cause | None) -> str:
    if cause is None:
        return "no subscription events yet"
    when = datetime.fromtimestamp(cause.created, tz=UTC).isoformat()
    return f"{cause.event_type} {cause.event_id} created {when}"


def describe(state: CustomerState) -> str:
    """Human lines: the tier and why, each subscription, the entitlements."""
    lines = [f"{state.customer_id}: {state.tier}", f"  why: {_cause(state.tier_cause)}"]
    for sub in sorted(state.subscriptions.values(), key=lambda s: s.subscription_id):
        cancel = " (cancels at period end)" if sub.cancel_at_period_end else ""
        lines.append(
            f"  subscription {sub.subscription_id}: {sub.status} tier={sub.tier or '-'}{cancel}"
            f" <- {_cause(sub.cause)}"
        )
    if state.entitlements is not None:
        keys = ", ".join(state.entitlements.lookup_keys) or "none"
        lines.append(f"  entitlements: {keys} <- {_cause(state.entitlements.cause)}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """Print the tier; exit NOT_FOUND if the customer is unknown, UNAVAILABLE without NATS."""
    settings = settings_from(args)

    async def read(js: Any) -> CustomerState | None:
        from nats.js.errors import BucketNotFoundError

        try:
            kv = await js.key_value(TIERS_BUCKET)
        except BucketNotFoundError:
            return None  # the projector never ran: nobody has a known tier yet
        state, _revision = await read_state(kv, args.customer_id)
        return state

    state = on_jetstream("tier", settings, read)
    if state is None:
        # On stderr: with --json, stdout holds JSON or nothing.
        print(
            f"{args.customer_id}: unknown (no billing events projected for this customer)",
            file=sys.stderr,
        )
        return ExitCode.NOT_FOUND
    print(state.model_dump_json(indent=2) if args.json else describe(state))
    return ExitCode.OK
