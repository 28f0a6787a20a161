"""``stripe-bridge serve``: run one function as Knative does (the container entrypoint)."""

from __future__ import annotations

import argparse
from pathlib import Path

from pydantic import Field

from ..config import EnvModel, load_model
from ..errors import CommandError
from ..exitcodes import ExitCode
from ..server import HEADER_READ_TIMEOUT_SECONDS, function_app, run


class ServeSettings(EnvModel):
    """What Knative and the image set for ``serve`` (command-line options win)."""

    function_source: str | None = None
    function_target: str = "handle"
    host: str = "0.0.0.0"
    port: int = Field(default=8080, ge=1, le=65535)
    header_read_timeout_seconds: float = Field(default=HEADER_READ_TIMEOUT_SECONDS, gt=0, le=60)


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``serve`` subcommand."""
    parser = subparsers.add_parser(
        "serve",
        help="serve one function (FUNCTION_SOURCE/FUNCTION_TARGET, PORT) with drain on SIGTERM",
    )
    parser.add_argument("--source", help="function file (default: $FUNCTION_SOURCE)")
    parser.add_argument("--target", help="its ASGI callable (default: $FUNCTION_TARGET, handle)")
    parser.add_argument("--host", help="address (default: $HOST, 0.0.0.0)")
    parser.add_argument("--port", type=int, help="port (default: $PORT, 8080)")
    parser.set_defaults(func=run_serve)


def run_serve(args: argparse.Namespace) -> int:
    """Load the function's target and serve it."""
    # Read here, not as argparse defaults: a bad PORT is the one-line config error (exit 2).
    env = load_model(ServeSettings)
    source_name = args.source or env.function_source
    if not source_name:
        raise CommandError(
            "stripe-bridge serve: set --source or FUNCTION_SOURCE (functions/<name>/main.py)",
            ExitCode.CONFIG,
        )
    source = Path(source_name)
    if not source.is_file():
        raise CommandError(f"stripe-bridge serve: no function source at {source}", ExitCode.CONFIG)
    port = args.port if args.port is not None else env.port
    app = function_app(source, args.target or env.function_target)
    host = args.host or env.host
    timeout = env.header_read_timeout_seconds
    graceful = app.function.graceful_shutdown_seconds()
    run(
        app,
        host,
        port,
        reader=app.reader,
        header_timeout=timeout,
        function=app.function,
        graceful_shutdown=graceful,
    )
    return ExitCode.OK
