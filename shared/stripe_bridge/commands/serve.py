"""``stripe-bridge serve``: run one function as Knative does (the container entrypoint)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from ..server import function_app, run


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``serve`` subcommand."""
    parser = subparsers.add_parser(
        "serve",
        help="serve one function (FUNCTION_SOURCE/FUNCTION_TARGET, PORT) with drain on SIGTERM",
    )
    parser.add_argument("--source", default=os.environ.get("FUNCTION_SOURCE"))
    parser.add_argument("--target", default=os.environ.get("FUNCTION_TARGET", "handle"))
    parser.add_argument("--host", default=os.environ.get("HOST", "0.0.0.0"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8080")))
    parser.set_defaults(func=run_serve)


def run_serve(args: argparse.Namespace) -> int:
    """Load the function's target and serve it."""
    if not args.source:
        print(
            "stripe-bridge serve: set --source or FUNCTION_SOURCE (functions/<name>/main.py)",
            file=sys.stderr,
        )
        return 2
    source = Path(args.source)
    if not source.is_file():
        print(f"stripe-bridge serve: no function source at {source}", file=sys.stderr)
        return 2
    app = function_app(source, args.target)
    run(app, args.host, args.port, reader=app.reader)
    return 0
