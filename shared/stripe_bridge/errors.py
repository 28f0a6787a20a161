"""The one error base: a failure the operator reads as one line, carrying its exit code.

``exit_code_of`` (``cli.main``, ``serve.main``) catches it once, prints ``line`` on stderr
and exits ``exit_code``.
"""

import sys
from collections.abc import Callable
from typing import TypeVar

from .exitcodes import ExitCode

ArgsT = TypeVar("ArgsT")


class StripeBridgeError(Exception):
    """A failure meant for an operator: a one-line message and the process exit code.

    Errors raised below the commands (configuration, a deploy step) do not know which
    program runs: ``line`` puts it in front. Subclasses set their usual ``exit_code``; a
    raiser may pass another.
    """

    exit_code: ExitCode = ExitCode.FAILED

    def __init__(self, message: str, exit_code: ExitCode | None = None) -> None:
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code

    def line(self, program: str) -> str:
        """The one line on stderr: ``program: message``."""
        return f"{program}: {self}"


class CommandError(StripeBridgeError):
    """A command failed; its message is the whole line (``stripe-bridge <command>: ...``)."""

    def line(self, program: str) -> str:
        """The message as it is: the command wrote the whole line."""
        return str(self)


def exit_code_of(command: Callable[[ArgsT], int], args: ArgsT, program: str) -> int:
    """Run ``command(args)``; a StripeBridgeError becomes its one line on stderr and its
    exit code, Ctrl-C exit code 130."""
    try:
        return command(args)
    except StripeBridgeError as exc:
        print(exc.line(program), file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return ExitCode.INTERRUPTED
