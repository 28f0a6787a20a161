"""Pieces several subcommands share: NATS settings and connection, writing generated files."""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

from ..config import ConfigError, Settings, load_settings
from ..errors import CommandError
from ..exitcodes import ExitCode
from ..jetstream import connect_options
from ..ops.backup import since_time
from ..redact import redact_url

T = TypeVar("T")


def add_nats_arguments(parser: argparse.ArgumentParser) -> None:
    """``--nats-url`` and ``--stream`` overriding NATS_URL and NATS_STREAM."""
    parser.add_argument("--nats-url", help="NATS URL (default: $NATS_URL or nats://127.0.0.1:4222)")
    parser.add_argument("--stream", help="stream name (default: $NATS_STREAM or STRIPE)")


def add_consumer_arguments(parser: argparse.ArgumentParser, creates: str) -> None:
    """``--metrics-port`` and ``--replicas`` of a long-running billing consumer.

    ``creates`` names the streams or buckets ``--replicas`` applies to when it creates them.
    """
    parser.add_argument("--metrics-port", type=int, help="serve Prometheus /metrics on this port")
    parser.add_argument(
        "--replicas",
        type=int,
        default=1,
        help=f"replicas of {creates} if it has to create them (default 1)",
    )


def max_bytes(text: str) -> int:
    """Bytes in ``40G``, ``3500M`` or a plain number; -1 for unlimited."""
    from ..deploy.natsconf import size_bytes

    if text == "-1":
        return -1
    try:
        return int(text) if text.isdigit() else size_bytes(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_usage_limit_argument(parser: argparse.ArgumentParser) -> None:
    """``--usage-max-bytes``: USAGE's size limit, set whenever the command provisions it."""
    parser.add_argument(
        "--usage-max-bytes",
        type=max_bytes,
        default=-1,
        help="max_bytes of the USAGE stream it creates or updates, e.g. 250G (default -1: "
        "none; give every consumer the same, docs/deploy.md Sizing)",
    )


def since_option(text: str | None) -> datetime | None:
    """``--since`` (e.g. ``6h``) as the moment that long ago; ConfigError if malformed."""
    try:
        return since_time(text)
    except ValueError as exc:
        raise ConfigError(f"--since: {exc}") from None


def settings_from(args: argparse.Namespace) -> Settings:
    """Settings from the environment, with the NATS command-line overrides applied."""
    overrides: dict[str, object] = {}
    if getattr(args, "nats_url", None):
        overrides["nats_url"] = args.nats_url
    if getattr(args, "stream", None):
        overrides["nats_stream"] = args.stream
    return load_settings(**overrides)


async def connect(settings: Settings) -> Any:
    """A NATS connection for a command-line tool (reconnects, fails fast when down)."""
    import nats

    options = connect_options(settings)
    options["max_reconnect_attempts"] = 3

    async def quiet(_exc: Exception) -> None:
        # nats-py's default prints a traceback per failed attempt; the command reports the
        # failure itself, in one line, when connect or a request raises.
        return None

    return await nats.connect(error_cb=quiet, **options)


def on_jetstream(
    command: str, settings: Settings, work: Callable[[Any], Awaitable[T]], advice: str = ""
) -> T:
    """Run ``work(jetstream context)`` on a fresh connection, closed afterwards.

    Any failure becomes a CommandError (exit code UNAVAILABLE: NATS unreachable or refusing)
    naming the command and the (redacted) NATS URL, followed by ``advice``; a CommandError
    that ``work`` raised passes unchanged.
    """

    async def go() -> T:
        nc = await connect(settings)
        try:
            return await work(nc.jetstream())
        finally:
            await nc.close()

    try:
        return asyncio.run(go())
    except CommandError:
        raise  # ``work`` already said what failed, and how the command ends
    except Exception as exc:
        where = redact_url(settings.nats_url)
        detail = f"{where}: {type(exc).__name__}: {exc}{advice}"
        raise CommandError(f"stripe-bridge {command}: {detail}", ExitCode.UNAVAILABLE) from exc


def write_or_check(files: Mapping[Path, str], check: bool, hint: str = "") -> int:
    """Write each generated file that differs; with ``check`` only report it.

    Returns the exit code: FAILED when ``check`` found a file out of date, else OK. ``hint`` (the
    command that regenerates) is appended to each "out of date" line.
    """
    drift = 0
    for path, content in files.items():
        if path.exists() and path.read_text() == content:
            continue
        drift += 1
        if check:
            print(f"out of date: {path}{f' ({hint})' if hint else ''}")
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(content)
            print(f"wrote {path}")
    return ExitCode.FAILED if check and drift else ExitCode.OK
