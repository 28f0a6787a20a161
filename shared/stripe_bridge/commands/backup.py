"""``stripe-bridge export`` and ``stripe-bridge import``: back up and restore the stream."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from ..config import ConfigError
from ..exitcodes import ExitCode
from ..ops.backup import ExportedMessage, ImportCounts, export_stream, import_messages
from .backup_all import add_backup_arguments, run_export_all, run_import_all
from .common import add_nats_arguments, on_jetstream, settings_from, since_option


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``export`` and ``import`` subcommands."""
    export = subparsers.add_parser("export", help="write the stream to a JSON Lines file")
    add_nats_arguments(export)
    export.add_argument("--out", type=Path, help="file to write ('-': stdout)")
    export.add_argument("--since", help="only messages stored in the last DURATION (e.g. 24h)")
    add_backup_arguments(export)
    export.set_defaults(func=run_export)

    restore = subparsers.add_parser(
        "import", help="publish an export back into the stream (idempotent)"
    )
    add_nats_arguments(restore)
    restore.add_argument(
        "file", type=Path, help="a file written by `stripe-bridge export` (--all: its folder)"
    )
    restore.add_argument(
        "--all", action="store_true", help="restore every stream of an `export --all` backup"
    )
    restore.set_defaults(func=run_import)


def run_export(args: argparse.Namespace) -> int:
    """Export the stream; print how many messages were written."""
    if args.all:
        return run_export_all(args)
    if args.out is None:
        raise ConfigError("export: --out FILE (one stream) or --all --dir DIR (everything)")
    settings = settings_from(args)
    since = since_option(args.since)

    async def export(js: Any) -> int:
        if str(args.out) == "-":
            return await export_stream(js, settings.nats_stream, sys.stdout.write, since)
        with args.out.open("w") as out:
            return await export_stream(js, settings.nats_stream, out.write, since)

    count = on_jetstream("export", settings, export)
    print(
        f"exported {count} messages from stream {settings.nats_stream} to {args.out}",
        file=sys.stderr,
    )
    return ExitCode.OK


def _read(path: Path) -> list[ExportedMessage]:
    messages = []
    with path.open() as lines:
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                messages.append(ExportedMessage.model_validate_json(line))
            except ValidationError as exc:
                problem = exc.errors()[0]["msg"]
                raise ConfigError(f"{path}:{number}: not an export line: {problem}") from None
    return messages


def run_import(args: argparse.Namespace) -> int:
    """Import an export file with a progress line; exit 1 if a publish fails (re-run it)."""
    if args.all:
        return run_import_all(args)
    settings = settings_from(args)
    try:
        messages = _read(args.file)
    except OSError as exc:
        raise ConfigError(f"cannot read {args.file}: {exc.strerror}") from None
    total = len(messages)

    def progress(counts: ImportCounts) -> None:
        done = counts.published + counts.duplicate
        if done == total or done % 100 == 0:
            print(
                f"\rimported {done}/{total} (published {counts.published}, "
                f"duplicate {counts.duplicate})",
                end="\n" if done == total else "",
                file=sys.stderr,
                flush=True,
            )

    counts = on_jetstream(
        "import",
        settings,
        lambda js: import_messages(js, settings.nats_stream, messages, progress),
        advice=" (importing again is safe: stored messages come back as duplicates)",
    )
    print(
        f"import {args.file}: {total} messages, published {counts.published}, "
        f"duplicate {counts.duplicate}"
    )
    return ExitCode.OK
