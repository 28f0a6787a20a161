"""logjson.py: ``LOG_FORMAT=json`` writes each record as one JSON object on one line."""

from __future__ import annotations

import json
import logging
import sys

from stripe_bridge.logjson import JsonFormatter


def record(message: str, *args: object, exc: bool = False) -> logging.LogRecord:
    exc_info = sys.exc_info() if exc else None
    return logging.LogRecord("stripe_bridge.x", logging.ERROR, "f.py", 1, message, args, exc_info)


def test_the_fields_with_the_message_rendered() -> None:
    line = JsonFormatter().format(record("stored id=%s seq=%d", "evt_1", 7))
    entry = json.loads(line)
    assert set(entry) == {"time", "level", "logger", "message"}
    assert (entry["level"], entry["logger"], entry["message"]) == (
        "ERROR",
        "stripe_bridge.x",
        "stored id=evt_1 seq=7",
    )
    # UTC, milliseconds, as collectors parse it.
    assert entry["time"].endswith("+00:00") and len(entry["time"].split(".")[1]) == 9


def test_newlines_quotes_and_tracebacks_stay_on_one_line() -> None:
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        line = JsonFormatter().format(record('two\nlines "quoted"', exc=True))
    assert "\n" not in line
    entry = json.loads(line)
    assert entry["message"] == 'two\nlines "quoted"'
    assert entry["exception"].splitlines()[-1] == "RuntimeError: boom"
