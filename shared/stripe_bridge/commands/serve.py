"""``stripe-bridge serve``: run one function as Knative does (``stripe_bridge.serve``)."""

from __future__ import annotations

import argparse

from ..serve import add_options, serve


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``serve`` subcommand (the image runs ``stripe-bridge-serve``, its light twin)."""
    parser = subparsers.add_parser(
        "serve",
        help="serve one function (FUNCTION_SOURCE/FUNCTION_TARGET, PORT) with drain on SIGTERM",
    )
    add_options(parser)
    parser.set_defaults(func=serve)
