"""``stripe-bridge send``: post a correctly signed event, like ``stripe trigger``."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from ..errors import CommandError
from ..exitcodes import ExitCode
from ..ops.samples import sample_event
from ..signature import sign_header
from .dev import DEFAULT_DATA_DIR, DEFAULT_PORT, read_dev_secret


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``send`` subcommand."""
    parser = subparsers.add_parser("send", help="post a signed sample (or given) Stripe event")
    parser.add_argument("event_type", help="e.g. invoice.paid")
    parser.add_argument("--url", default=f"http://127.0.0.1:{DEFAULT_PORT}/")
    parser.add_argument("--secret", help="whsec_... (default: $STRIPE_WEBHOOK_SECRET or dev's)")
    parser.add_argument("--file", type=Path, help="post this event JSON instead of the sample")
    parser.add_argument("--live", action="store_true", help="mark the sample as a live-mode event")
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Build, sign and post the event; print the bridge's answer."""
    import httpx

    secret = args.secret or os.environ.get("STRIPE_WEBHOOK_SECRET", "").split(",")[0].strip()
    secret = secret or read_dev_secret(args.data_dir)
    if not secret:
        raise CommandError(
            "stripe-bridge send: no secret: pass --secret, set STRIPE_WEBHOOK_SECRET or run dev",
            ExitCode.CONFIG,
        )
    if args.file:
        try:
            event = json.loads(args.file.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            message = f"stripe-bridge send: cannot read {args.file}: {exc}"
            raise CommandError(message, ExitCode.CONFIG) from exc
    else:
        event = sample_event(args.event_type)
        event["livemode"] = bool(args.live)
    event["type"] = args.event_type
    body = json.dumps(event).encode()
    headers = {
        "Content-Type": "application/json",
        "Stripe-Signature": sign_header(secret.encode(), body),
    }
    try:
        response = httpx.post(args.url, content=body, headers=headers, timeout=35.0)
    except httpx.HTTPError as exc:
        message = f"stripe-bridge send: {args.url}: {type(exc).__name__}: {exc}"
        raise CommandError(message, ExitCode.UNAVAILABLE) from exc
    print(f"{response.status_code} {event.get('id')} {args.event_type} {response.text}")
    return ExitCode.OK if response.is_success else ExitCode.FAILED
