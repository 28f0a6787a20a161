"""``stripe-bridge replay``: store events missed during an outage, from Stripe's Events API."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from datetime import UTC, datetime
from typing import Any

from ..config import ConfigError
from ..errors import CommandError
from ..exitcodes import ExitCode
from ..ingest import Ingested
from ..ops.backup import stored_ids
from ..ops.replay import (
    EventQuery,
    ReplayCounts,
    ReplayError,
    fetch_event,
    fetch_events,
    replay_events,
)
from ..redact import redact_url
from ..runtime import Runtime
from .common import add_nats_arguments, connect, settings_from, since_option

DEFAULT_API_BASE = "https://api.stripe.com"


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``replay`` subcommand."""
    parser = subparsers.add_parser(
        "replay", help="store events from Stripe's Events API that the stream is missing"
    )
    add_nats_arguments(parser)
    parser.add_argument("--since", help="how far back, e.g. 6h or 3d (Stripe keeps 30d)")
    parser.add_argument(
        "--types",
        action="append",
        default=[],
        help="only these event types, comma-separated or repeated (types[], at most 20)",
    )
    parser.add_argument(
        "--undelivered",
        action="store_true",
        help="only events whose delivery to an endpoint failed (delivery_success=false)",
    )
    parser.add_argument(
        "--after", metavar="EVENT_ID", help="only events newer than this one (ending_before)"
    )
    parser.add_argument("--event", metavar="EVENT_ID", help="just this one event (evt_...)")
    parser.add_argument(
        "--dry-run", action="store_true", help="list what would be stored; store nothing"
    )
    parser.add_argument("--api-base", default=DEFAULT_API_BASE, help="Stripe API base URL")
    parser.add_argument(
        "--api-key", help="restricted key that may read Events (default: $STRIPE_API_KEY)"
    )
    parser.set_defaults(func=run)


def query_from(args: argparse.Namespace) -> EventQuery | None:
    """The list query the options ask for; None for ``--event``. ConfigError if they clash."""
    types = tuple(t.strip() for group in args.types for t in group.split(",") if t.strip())
    if args.event:
        if args.since or types or args.undelivered or args.after:
            raise ConfigError("--event replays one event: no --since, --types, --undelivered")
        return None
    if not (args.since or args.after):
        raise ConfigError("replay needs --since, --after or --event (Stripe keeps 30 days)")
    if len(types) > 20:
        raise ConfigError("--types: the Events API takes at most 20 types")
    return EventQuery(since_option(args.since), types, args.undelivered, args.after)


def describe(args: argparse.Namespace, query: EventQuery | None) -> str:
    """What was asked, for the summary line."""
    if query is None:
        return f"event {args.event}"
    parts = []
    if query.since:
        parts.append(f"since {query.since.isoformat(timespec='seconds')}")
    if query.after:
        parts.append(f"after {query.after}")
    if query.types:
        parts.append(f"types {','.join(query.types)}")
    if query.undelivered:
        parts.append("undelivered")
    return " ".join(parts)


def run(args: argparse.Namespace) -> int:
    """Fetch, skip what is stored, ingest the rest (or list it); print a summary line."""
    settings = settings_from(args)
    api_key = args.api_key or os.environ.get("STRIPE_API_KEY")
    if not api_key:
        raise ConfigError("replay needs --api-key or STRIPE_API_KEY (a key that may read Events)")
    query = query_from(args)
    # ingest logs one line per event; the progress bar and summary say it better here.
    logging.getLogger("stripe_bridge").setLevel(logging.WARNING)

    def fetch() -> list[dict[str, Any]]:
        if query is None:
            return [fetch_event(api_key, args.api_base, args.event)]
        return fetch_events(api_key, args.api_base, query)

    async def go() -> tuple[list[dict[str, Any]], set[str], ReplayCounts]:
        from tqdm import tqdm

        # NATS first: no Stripe API calls when the events could not be stored anyway.
        nc = await connect(settings)
        try:
            events = await asyncio.to_thread(fetch)
            known: set[str] = set()
            if events:
                # Each event is stored after it was created: a scan from the oldest sees all.
                created = min(int(e.get("created", 0)) for e in events)
                oldest = datetime.fromtimestamp(created, UTC)
                known = await stored_ids(nc.jetstream(), settings.nats_stream, oldest)
        finally:
            await nc.close()
        if args.dry_run:
            return events, known, ReplayCounts()
        runtime = Runtime(settings, "replay")
        with tqdm(total=len(events), unit="event", desc="replay", file=sys.stderr) as bar:

            def advance(_result: Ingested | None) -> None:
                bar.update(1)

            try:
                counts = await replay_events(runtime, events, known, advance)
            finally:
                await runtime.close()
        return events, known, counts

    try:
        events, known, counts = asyncio.run(go())
    except ReplayError as exc:
        raise CommandError(f"stripe-bridge replay: {exc}", exc.exit_code) from exc
    except Exception as exc:
        where = redact_url(settings.nats_url)
        detail = f"{where}: {type(exc).__name__}: {exc}"
        raise CommandError(f"stripe-bridge replay: {detail}", ExitCode.UNAVAILABLE) from exc
    what = describe(args, query)
    if args.dry_run:
        for event in events:
            verb = "stored" if event.get("id") in known else "would publish"
            print(f"{verb} {event.get('id')} {event.get('type')} created {event.get('created')}")
        missing = sum(1 for event in events if event.get("id") not in known)
        print(
            f"replay {what} (dry run): {len(events)} events, would publish {missing}, "
            f"already stored {len(events) - missing}"
        )
        return ExitCode.OK
    print(
        f"replay {what}: {len(events)} events, published {counts.published}, "
        f"duplicate {counts.duplicate}, failed {counts.failed}"
    )
    return ExitCode.FAILED if counts.failed else ExitCode.OK
