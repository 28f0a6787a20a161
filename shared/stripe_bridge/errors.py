"""Errors a command reports to the operator as one line (the CLI turns them into exit codes)."""

from .exitcodes import ExitCode


class CommandError(Exception):
    """A command failed; the message is the one line ``main`` prints, then exits ``exit_code``."""

    def __init__(self, message: str, exit_code: ExitCode = ExitCode.FAILED) -> None:
        super().__init__(message)
        self.exit_code = exit_code
