"""``stripe-bridge-serve``: the image's entrypoint, one function served as Knative runs it.

``stripe-bridge serve`` does the same through the whole command line (``commands/serve.py``
adds these options to its parser and calls ``serve``). This module is the cold start's
instead: it imports the server and the function's own modules, never the command tree,
``deploy``, ``ops`` or (for a webhook function) ``billing`` (tests/coldstart/test_imports.py).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from pydantic import Field

from .config import EnvModel, load_model
from .errors import CommandError, exit_code_of
from .exitcodes import ExitCode
from .server import HEADER_READ_TIMEOUT_SECONDS, function_app, run

#: What the error lines of ``serve`` start with, whichever way it was started.
PROGRAM = "stripe-bridge serve"


class ServeSettings(EnvModel):
    """What Knative and the image set for ``serve`` (command-line options win)."""

    function_source: str | None = None
    function_target: str = "handle"
    host: str = "0.0.0.0"
    port: int = Field(default=8080, ge=1, le=65535)
    header_read_timeout_seconds: float = Field(default=HEADER_READ_TIMEOUT_SECONDS, gt=0, le=60)


def add_options(parser: argparse.ArgumentParser) -> None:
    """The options of ``serve``, on this entrypoint's parser and on the CLI's subcommand."""
    parser.add_argument("--source", help="function file (default: $FUNCTION_SOURCE)")
    parser.add_argument("--target", help="its ASGI callable (default: $FUNCTION_TARGET, handle)")
    parser.add_argument("--host", help="address (default: $HOST, 0.0.0.0)")
    parser.add_argument("--port", type=int, help="port (default: $PORT, 8080)")


def serve(args: argparse.Namespace) -> int:
    """Load the function's target and serve it until SIGTERM; raises StripeBridgeError."""
    # Read here, not as argparse defaults: a bad PORT is the one-line config error (exit 2).
    env = load_model(ServeSettings)
    source_name = args.source or env.function_source
    if not source_name:
        raise CommandError(
            f"{PROGRAM}: set --source or FUNCTION_SOURCE (functions/<name>/main.py)",
            ExitCode.CONFIG,
        )
    source = Path(source_name)
    if not source.is_file():
        raise CommandError(f"{PROGRAM}: no function source at {source}", ExitCode.CONFIG)
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


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``stripe-bridge-serve`` console script; returns the exit code."""
    parser = argparse.ArgumentParser(
        prog="stripe-bridge-serve",
        description="Serve one function as Knative runs it (the image's entrypoint).",
    )
    add_options(parser)
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    return exit_code_of(serve, args, "stripe-bridge")


if __name__ == "__main__":
    sys.exit(main())
