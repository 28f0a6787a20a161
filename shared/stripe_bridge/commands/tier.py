"""``stripe-bridge tier CUSTOMER_ID``: a customer's current tier and the event that set it."""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime
from typing import Any

from ..billing.limits import reset_at
from ..billing.projector import read_state
from ..billing.tiers import TIERS_BUCKET, Cause, CustomerState, TierConfig
from ..billing.usage_counter import count_key, read_count, usage_bucket
from ..errors import CommandError
from ..exitcodes import ExitCode
from .common import add_nats_arguments, on_jetstream, settings_from
from .project_tiers import add_tiers_argument, load_tiers


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``tier`` subcommand."""
    parser = subparsers.add_parser("tier", help="show a customer's tier and why")
    add_nats_arguments(parser)
    parser.add_argument("customer_id", metavar="CUSTOMER_ID", help="Stripe customer id (cus_...)")
    parser.add_argument("--json", action="store_true", help="print the stored state as JSON")
    add_tiers_argument(parser)
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


async def read_usage(js: Any, config: TierConfig, customer_id: str) -> dict[str, float]:
    """The customer's usage per meter in the current windows (0 where nothing counted)."""
    from nats.js.errors import BucketNotFoundError

    now = datetime.now(UTC)
    usage: dict[str, float] = {}
    for meter, window in config.meters.items():
        try:
            kv = await js.key_value(usage_bucket(window))
        except BucketNotFoundError:
            usage[meter] = 0.0  # count-usage never ran
            continue
        count, _revision = await read_count(kv, count_key(customer_id, meter, window, now))
        usage[meter] = count.used
    return usage


def describe_limits(state: CustomerState, config: TierConfig, usage: dict[str, float]) -> str:
    """Human lines: each meter's usage against the tier's limit, and when it resets."""
    tier = config.get(state.tier) or config.tiers[0]
    now = datetime.now(UTC)
    lines = []
    for meter, window in config.meters.items():
        limit = tier.limits.get(meter)
        ends = reset_at(window, now)
        resets = f", resets {ends.isoformat()}" if ends else ""
        cap = "unlimited" if limit is None else f"{limit:g}"
        lines.append(f"  {meter}: {usage.get(meter, 0.0):g} of {cap} per {window.value}{resets}")
    features = ", ".join(f"{k}={v}" for k, v in tier.features.items()) or "none"
    return "\n".join([f"  features: {features}", *lines])


def run(args: argparse.Namespace) -> int:
    """Print the tier, limits and usage; exit NOT_FOUND if the customer is unknown,
    UNAVAILABLE without NATS."""
    settings = settings_from(args)
    config = load_tiers(args.tiers_file)

    async def read(js: Any) -> tuple[CustomerState | None, dict[str, float]]:
        from nats.js.errors import BucketNotFoundError

        try:
            kv = await js.key_value(TIERS_BUCKET)
        except BucketNotFoundError:
            return None, {}  # the projector never ran: nobody has a known tier yet
        state, _revision = await read_state(kv, args.customer_id)
        if state is None:
            return None, {}
        return state, await read_usage(js, config, args.customer_id)

    state, usage = on_jetstream("tier", settings, read)
    if state is None:
        # On stderr: with --json, stdout holds JSON or nothing.
        raise CommandError(
            f"{args.customer_id}: unknown (no billing events projected for this customer)",
            ExitCode.NOT_FOUND,
        )
    if args.json:
        print(json.dumps({**state.model_dump(mode="json"), "usage": usage}, indent=2))
    else:
        print(describe(state))
        print(describe_limits(state, config, usage))
    return ExitCode.OK
