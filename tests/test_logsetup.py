"""logsetup.py: one line per record on stderr, as text or as one JSON object."""

from __future__ import annotations

import json
import logging

import pytest
from stripe_bridge.logsetup import TEXT_FORMAT, LogFormat, TextFormatter, configure_logging

#: A logger of these tests' own: tests before them in the same worker set levels on
#: ``stripe_bridge``'s loggers, which would hide an INFO line of a child.
LOGGER = "logsetup_test"


@pytest.fixture(autouse=True)
def restored(monkeypatch: pytest.MonkeyPatch) -> None:
    """The root logger and logging's flags as they were, after each test."""
    monkeypatch.setattr(logging.root, "handlers", [])
    monkeypatch.setattr(logging.root, "level", logging.root.level)
    for flag in ("_srcfile", "logThreads", "logProcesses", "logMultiprocessing"):
        monkeypatch.setattr(logging, flag, getattr(logging, flag))


def configure(level: str, log_format: LogFormat = LogFormat.TEXT) -> None:
    """``configure_logging`` as at a process start: pytest's own capturing handler is on the
    root logger during a test, and basicConfig does nothing to a root that has handlers."""
    logging.root.handlers.clear()
    configure_logging(level, log_format)


def test_json_is_one_object_per_line(capsys: pytest.CaptureFixture[str]) -> None:
    configure("WARNING", LogFormat.JSON)
    log = logging.getLogger(LOGGER)
    log.info("below the level")
    log.warning("published seq=%d", 7)
    try:
        raise ValueError("boom")
    except ValueError:
        log.exception("failed")
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 2
    first, second = (json.loads(line) for line in lines)
    assert set(first) == {"time", "level", "logger", "message"}
    assert (first["level"], first["logger"], first["message"]) == (
        "WARNING",
        LOGGER,
        "published seq=7",
    )
    assert "ValueError: boom" in second["exception"]


def test_text_is_time_level_logger_message(capsys: pytest.CaptureFixture[str]) -> None:
    configure("INFO")
    logging.getLogger(LOGGER).info("stored id=%s", "evt_1")
    (line,) = capsys.readouterr().err.splitlines()
    assert line.endswith(" INFO logsetup_test stored id=evt_1")


def test_records_skip_the_caller_thread_and_process() -> None:
    configure("INFO")
    record = logging.getLogger("x").makeRecord("x", logging.INFO, "f", 1, "m", (), None)
    assert logging._srcfile is None
    assert (record.threadName, record.processName) == (None, None)


#: One formatter for every case below, in turns across seconds.
TEXT = TextFormatter(TEXT_FORMAT)


@pytest.mark.parametrize(
    "created", [1_700_000_000.0, 1_700_000_000.999, 1_700_000_001.5, 1_699_999_999.25, 0.5]
)
def test_text_time_is_the_default_formatters(created: float) -> None:
    # The same formatter in turns across seconds: its once-a-second date is never stale.
    record = logging.makeLogRecord({"msg": "m", "created": created, "msecs": (created % 1) * 1000})
    for formatter in (TEXT, TEXT):
        assert formatter.format(record) == logging.Formatter(TEXT_FORMAT).format(record)
