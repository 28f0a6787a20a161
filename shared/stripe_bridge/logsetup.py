"""Logging of every bridge process: one line per record on stderr, as text or JSON."""

from __future__ import annotations

import logging
import sys
from enum import StrEnum


class LogFormat(StrEnum):
    """How log records are written to stderr."""

    TEXT = "text"
    JSON = "json"


def configure_logging(level: str, log_format: LogFormat = LogFormat.TEXT) -> None:
    """One line per record on stderr (callers never log secrets or bodies).

    Neither format shows the caller, thread or process, so records skip collecting them
    (the logging HOWTO's "Optimization" section): a webhook's line costs about half as much.
    """
    logging._srcfile = None  # no stack walk per record for the caller's file and line
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    handler = logging.StreamHandler(sys.stderr)
    if log_format is LogFormat.JSON:
        from .logjson import JsonFormatter

        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    logging.basicConfig(level=level, handlers=[handler])
