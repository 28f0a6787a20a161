"""``stripe-bridge tail``: print events as they land in the stream."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any

from ..errors import CommandError
from ..exitcodes import ExitCode
from ..redact import redact_url
from .common import add_nats_arguments, connect, settings_from


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``tail`` subcommand."""
    parser = subparsers.add_parser("tail", help="print events as they land in the stream")
    add_nats_arguments(parser)
    parser.add_argument("--subject", help="filter, e.g. 'stripe.live.invoice.>' (default: all)")
    parser.add_argument("--all", action="store_true", help="start at the first stored event")
    parser.add_argument("--json", action="store_true", help="print whole CloudEvents")
    parser.add_argument("--count", type=int, default=0, help="stop after N events (0: never)")
    parser.set_defaults(func=run)


def format_line(subject: str, seq: int, event: dict[str, Any]) -> str:
    """One human line per event."""
    error = event.get("translationerror")
    note = f" UNTRANSLATED({error})" if error else ""
    return f"#{seq} {subject} {event.get('id')} subject={event.get('subject', '-')}{note}"


def run(args: argparse.Namespace) -> int:
    """Follow the stream with an ordered consumer until interrupted or ``--count`` reached."""
    from nats.js.api import DeliverPolicy

    settings = settings_from(args)
    subject = args.subject or f"{settings.nats_subject_prefix}.>"

    async def go() -> None:
        nc = await connect(settings)
        done = asyncio.Event()
        seen = 0
        policy = DeliverPolicy.ALL if args.all else DeliverPolicy.NEW

        async def on_message(msg: Any) -> None:
            nonlocal seen
            event = json.loads(msg.data)
            if args.json:
                print(json.dumps(event), flush=True)
            else:
                print(format_line(msg.subject, msg.metadata.sequence.stream, event), flush=True)
            seen += 1
            if args.count and seen >= args.count:
                done.set()

        js = nc.jetstream()
        sub = await js.subscribe(
            subject,
            stream=settings.nats_stream,
            ordered_consumer=True,
            deliver_policy=policy,
            cb=on_message,
        )
        # On stderr: stdout carries only events (one JSON document per line with --json).
        print(
            f"tailing {subject} on stream {settings.nats_stream} (Ctrl-C to stop)",
            file=sys.stderr,
            flush=True,
        )
        try:
            await done.wait()
        finally:
            await sub.unsubscribe()
            await nc.close()

    try:
        asyncio.run(go())
    except KeyboardInterrupt:
        return ExitCode.OK
    except Exception as exc:
        where = redact_url(settings.nats_url)
        detail = f"{where}: {type(exc).__name__}: {exc}"
        raise CommandError(f"stripe-bridge tail: {detail}", ExitCode.UNAVAILABLE) from exc
    return ExitCode.OK
