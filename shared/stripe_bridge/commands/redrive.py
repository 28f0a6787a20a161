"""``stripe-bridge redrive``: move dead letters back to where they are handled, after a fix."""

from __future__ import annotations

import argparse
import sys

from stripe_bridge_events.deadletter import DEAD_LETTER_STREAM

from ..exitcodes import ExitCode
from ..ops.redrive import KNOWN, Choice, DeadLetterStream, Redriven, redrive
from .common import add_nats_arguments, on_jetstream, settings_from


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``redrive`` subcommand."""
    parser = subparsers.add_parser(
        "redrive", help="move chosen dead letters back to their consumer (after a fix)"
    )
    add_nats_arguments(parser)
    parser.add_argument(
        "--from",
        dest="dead_letters",
        default=DEAD_LETTER_STREAM,
        help=f"dead-letter stream: {', '.join(KNOWN)} or another (default: {DEAD_LETTER_STREAM})",
    )
    parser.add_argument(
        "--subject", help="only dead letters on these subjects, e.g. 'stripe_dlq.dead.tiers.>'"
    )
    parser.add_argument("--reason", help="only those whose reason contains this text")
    parser.add_argument(
        "--seq", type=int, action="append", default=[], help="only this sequence (repeatable)"
    )
    parser.add_argument("--dry-run", action="store_true", help="list what would move; move none")
    parser.add_argument("--json", action="store_true", help="one JSON object per dead letter")
    parser.set_defaults(func=run)


def line(result: Redriven) -> str:
    """One human line per chosen dead letter."""
    target = result.target or "-"
    return f"#{result.seq} {result.subject} -> {target}: {result.outcome} ({result.reason or '-'})"


def run(args: argparse.Namespace) -> int:
    """Redrive; exit FAILED if any chosen message could not be moved (or has no target)."""
    settings = settings_from(args)
    # A stream redrive does not know still works: its messages must say where they go.
    stream = KNOWN.get(args.dead_letters) or DeadLetterStream(args.dead_letters, ">")
    choice = Choice(args.subject, args.reason, set(args.seq))

    def report(result: Redriven) -> None:
        print(result.model_dump_json() if args.json else line(result), flush=True)

    results = on_jetstream(
        "redrive", settings, lambda js: redrive(js, stream, choice, args.dry_run, report)
    )
    moved = sum(r.outcome in ("redriven", "would_redrive") for r in results)
    verb = "would redrive" if args.dry_run else "redriven"
    print(f"{stream.name}: {len(results)} chosen, {verb} {moved}", file=sys.stderr)
    return ExitCode.OK if moved == len(results) else ExitCode.FAILED
