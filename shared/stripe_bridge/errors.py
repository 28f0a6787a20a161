"""Errors a command reports to the operator as one line (the CLI turns them into exit codes)."""


class CommandError(Exception):
    """A command failed; the message is the one line ``main`` prints (exit code 1)."""
