"""``stripe-bridge``: the command line. Each subcommand lives in ``stripe_bridge.commands``."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from .config import ConfigError

#: Subcommand modules; each has ``register(subparsers)`` that sets ``func`` on its parser.
COMMANDS = (
    "dev",
    "send",
    "tail",
    "provision",
    "serve",
    "generate",
    "knative",
    "nats",
)


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser (also used to document the commands)."""
    parser = argparse.ArgumentParser(
        prog="stripe-bridge",
        description="Stripe webhooks in, one durable CloudEvent per event out on NATS JetStream.",
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"stripe_bridge.commands.{name}").register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script; returns the process exit code."""
    args = build_parser().parse_args(argv)
    try:
        code: int = args.func(args)
    except ConfigError as exc:
        print(f"stripe-bridge: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
