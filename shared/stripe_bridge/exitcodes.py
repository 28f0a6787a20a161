"""The exit codes of every ``stripe-bridge`` command and consumer (docs/cli.md, generated).

One meaning per code, whatever the command: scripts and Kubernetes (a Job's or a pod's
exit code) can act on it without knowing which command ran.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """How a ``stripe-bridge`` process ended (``MEANING`` documents each)."""

    OK = 0
    FAILED = 1
    CONFIG = 2
    UNAVAILABLE = 3
    NOT_FOUND = 4
    NO_PROGRAM = 127
    INTERRUPTED = 130


MEANING = {
    ExitCode.OK: "Done: everything asked for happened (with `--dry-run`: would happen).",
    ExitCode.FAILED: "It ran, but part of the work failed or found a problem: events not "
    "stored, files out of date (`--check`), Services not Ready, a dead letter not redriven, "
    "an answer other than 2xx. The one line on stderr says what.",
    ExitCode.CONFIG: "Invalid configuration, arguments or input (a bad environment variable, "
    "an unreadable file): nothing was done; the one line names what to fix.",
    ExitCode.UNAVAILABLE: "Something the command needs is not available: NATS, Stripe's API, "
    "the Kubernetes API, OpenMeter or the Pushgateway is unreachable or refused it (a rejected "
    "key or password too), or the port a server must listen on is taken. Often worth a retry.",
    ExitCode.NOT_FOUND: "What was asked for does not exist: a customer without a tier, an "
    "event that is not in the stream.",
    ExitCode.NO_PROGRAM: "A program the command runs is not installed: `kubectl`, the "
    "Stripe CLI (`stripe`).",
    ExitCode.INTERRUPTED: "Stopped by Ctrl-C (SIGINT) before it finished.",
}


def exit_code_table() -> str:
    """The Markdown table of exit codes for docs/cli.md."""
    rows = ["| code | name | meaning |", "| --- | --- | --- |"]
    rows += [f"| {code.value} | `{code.name}` | {MEANING[code]} |" for code in ExitCode]
    return "\n".join(rows) + "\n"
