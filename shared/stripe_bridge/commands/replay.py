"""``stripe-bridge replay``: store events missed during an outage, from Stripe's Events API."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys

from ..backup import since_time, stored_ids
from ..config import ConfigError, redact_url
from ..ingest import Ingested, Runtime
from ..replay import ReplayCounts, ReplayError, fetch_events, replay_events
from .common import add_nats_arguments, connect, settings_from

DEFAULT_API_BASE = "https://api.stripe.com"
#: Exit codes: some events failed to store (re-run later); Stripe or NATS unusable.
EXIT_FAILED = 1
EXIT_UNAVAILABLE = 3


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``replay`` subcommand."""
    parser = subparsers.add_parser(
        "replay", help="store events from Stripe's Events API that the stream is missing"
    )
    add_nats_arguments(parser)
    parser.add_argument("--since", required=True, help="how far back, e.g. 6h or 3d (max 30d)")
    parser.add_argument("--api-base", default=DEFAULT_API_BASE, help="Stripe API base URL")
    parser.add_argument(
        "--api-key", help="restricted key that may read Events (default: $STRIPE_API_KEY)"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Fetch, skip what is stored, ingest the rest; print a summary line."""
    settings = settings_from(args)
    api_key = args.api_key or os.environ.get("STRIPE_API_KEY")
    if not api_key:
        raise ConfigError("replay needs --api-key or STRIPE_API_KEY (a key that may read Events)")
    try:
        since = since_time(args.since)
    except ValueError as exc:
        raise ConfigError(f"--since: {exc}") from None
    assert since is not None  # --since is required
    # ingest logs one line per event; the progress bar and summary say it better here.
    logging.getLogger("stripe_bridge").setLevel(logging.WARNING)

    async def go() -> tuple[int, ReplayCounts]:
        from tqdm import tqdm

        nc = await connect(settings)
        try:
            known = await stored_ids(nc.jetstream(), settings.nats_stream, since)
        finally:
            await nc.close()
        events = await asyncio.to_thread(fetch_events, api_key, args.api_base, since)
        runtime = Runtime(settings, "replay")
        with tqdm(total=len(events), unit="event", desc="replay", file=sys.stderr) as bar:

            def advance(_result: Ingested | None) -> None:
                bar.update(1)

            try:
                counts = await replay_events(runtime, events, known, advance)
            finally:
                await runtime.close()
        return len(events), counts

    try:
        total, counts = asyncio.run(go())
    except ReplayError as exc:
        print(f"stripe-bridge replay: {exc}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    except Exception as exc:
        where = redact_url(settings.nats_url)
        print(f"stripe-bridge replay: {where}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    print(
        f"replay since {since.isoformat(timespec='seconds')}: {total} events, "
        f"published {counts.published}, duplicate {counts.duplicate}, failed {counts.failed}"
    )
    return EXIT_FAILED if counts.failed else 0
