"""``stripe-bridge``: the command line. Each subcommand lives in ``stripe_bridge.commands``."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from . import __version__
from .errors import exit_code_of

#: Subcommand modules; each has ``register(subparsers)`` that sets ``func`` on its parser.
COMMANDS = (
    "dev",
    "send",
    "tail",
    "provision",
    "serve",
    "generate",
    "knative",
    "pushgateway_gc",
    "nats",
    "backup",
    "replay",
    "show",
    "redrive",
    "forward_openmeter",
    "project_tiers",
    "project_lifecycle",
    "count_usage",
    "tier",
)


def build_parser(commands: Sequence[str] = COMMANDS) -> argparse.ArgumentParser:
    """The argument parser with ``commands`` (all by default; also used to document them)."""
    parser = argparse.ArgumentParser(
        prog="stripe-bridge",
        description="Stripe webhooks in, one durable CloudEvent per event out on NATS JetStream.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in commands:
        importlib.import_module(f"stripe_bridge.commands.{name}").register(subparsers)
    return parser


def subcommand_names(parser: argparse.ArgumentParser) -> set[str]:
    """The subcommands ``parser`` knows."""
    return {
        name
        for action in parser._actions
        if isinstance(action, argparse._SubParsersAction)
        for name in action.choices
    }


def parser_for(argv: Sequence[str]) -> argparse.ArgumentParser:
    """The parser ``main`` uses for ``argv``: only the subcommand named first, if it can.

    `serve` is a scale-to-zero cold start and must not pay for importing every other
    command's dependencies (YAML, Kubernetes, OpenMeter...). A subcommand usually lives in
    the module of its name with underscores; anything else (``--help``, a typo, a module
    registering other names) gets the full parser.
    """
    command = argv[0] if argv else ""
    module = command.replace("-", "_")
    if module in COMMANDS:
        parser = build_parser((module,))
        if command in subcommand_names(parser):
            return parser
    return build_parser()


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script; returns the process exit code."""
    argv = sys.argv[1:] if argv is None else argv
    args = parser_for(argv).parse_args(argv)
    return exit_code_of(args.func, args, "stripe-bridge")


if __name__ == "__main__":
    sys.exit(main())
