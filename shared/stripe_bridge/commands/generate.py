"""``stripe-bridge generate``: write the files derived from the event-type registry."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..deploy.codegen import generated_files
from .common import write_or_check


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``generate`` subcommand."""
    parser = subparsers.add_parser(
        "generate", help="regenerate functions/ and docs from the registry"
    )
    parser.add_argument("--root", type=Path, default=Path("."), help="repository root")
    parser.add_argument("--check", action="store_true", help="only report drift; exit 1 if any")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Write (or with --check, compare) every generated file."""
    return write_or_check(generated_files(args.root), args.check)
