"""Logging of every bridge process: one line per record on stderr, as text or JSON."""

from __future__ import annotations

import logging
import sys
import time
from enum import StrEnum

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"


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
        handler.setFormatter(TextFormatter(TEXT_FORMAT))
    logging.basicConfig(level=level, handlers=[handler])


class TextFormatter(logging.Formatter):
    """``logging.Formatter`` with its default time, the date and time rendered once a second.

    ``formatTime`` otherwise converts and ``strftime``s every record's time (~1.4 us of a
    webhook's ~8 us line); the handler's lock serialises calls.
    """

    _second: int | None = None
    _date_time = ""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        """``YYYY-MM-DD HH:MM:SS,mmm`` in local time, as the default formatter writes it."""
        if datefmt is not None:
            return super().formatTime(record, datefmt)
        second = int(record.created)
        if second != self._second:
            self._date_time = time.strftime(self.default_time_format, self.converter(second))
            self._second = second
        return f"{self._date_time},{int(record.msecs):03d}"
