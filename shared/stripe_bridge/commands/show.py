"""``stripe-bridge show evt_...``: where one event is in the stream, and what was stored."""

from __future__ import annotations

import argparse
import json
from typing import Any

from stripe_bridge_events import TypedEvent, parse

from ..errors import CommandError
from ..exitcodes import ExitCode
from ..message import MSG_ID_HEADER
from ..ops.backup import iter_stream
from .common import add_nats_arguments, on_jetstream, settings_from, since_option


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``show`` subcommand."""
    parser = subparsers.add_parser(
        "show", help="find one event in the stream: its place, CloudEvent and translation"
    )
    add_nats_arguments(parser)
    parser.add_argument("event_id", metavar="EVENT_ID", help="Stripe event id (evt_...)")
    parser.add_argument(
        "--since", help="only look at what was stored this recently, e.g. 2d (default: all)"
    )
    parser.add_argument("--json", action="store_true", help="print the stored message as JSON")
    parser.set_defaults(func=run)


async def find(js: Any, stream: str, event_id: str, since: Any = None) -> dict[str, Any] | None:
    """The stored message whose ``Nats-Msg-Id`` is ``event_id``, or None."""
    # ``async with``: returning early deletes the reader's consumer while still connected.
    async with iter_stream(js, stream, since) as messages:
        async for msg in messages:
            if (msg.headers or {}).get(MSG_ID_HEADER) == event_id:
                return {
                    "stream": stream,
                    "seq": msg.metadata.sequence.stream,
                    "subject": msg.subject,
                    "stored": msg.metadata.timestamp.isoformat(),
                    "headers": dict(msg.headers or {}),
                    "cloudevent": json.loads(msg.data),
                }
    return None


def describe(found: dict[str, Any]) -> str:
    """Human lines: place, CloudEvent attributes, then the translation or why there is none."""
    cloudevent = found["cloudevent"]
    lines = [
        f"{cloudevent['id']}: stream {found['stream']} seq {found['seq']}, "
        f"subject {found['subject']}, stored {found['stored']}"
    ]
    for key, value in cloudevent.items():
        if key != "data":
            lines.append(f"  {key}: {value}")
    event = parse(cloudevent)
    if isinstance(event, TypedEvent):
        translation = json.dumps(event.translation.model_dump(mode="json"), indent=2)
        lines.append(f"  translation ({type(event.translation).__name__}):")
        lines += [f"    {line}" for line in translation.splitlines()]
    else:
        lines.append(f"  no translation: {event.reason.value}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """Scan the stream for the event; exit NOT_FOUND when it is not there."""
    settings = settings_from(args)
    since = since_option(args.since)
    found = on_jetstream(
        "show", settings, lambda js: find(js, settings.nats_stream, args.event_id, since)
    )
    if found is None:
        window = f" (stored in the last {args.since})" if args.since else ""
        message = f"{args.event_id}: not in stream {settings.nats_stream}{window}"
        raise CommandError(message, ExitCode.NOT_FOUND)
    print(json.dumps(found, indent=2) if args.json else describe(found))
    return ExitCode.OK
