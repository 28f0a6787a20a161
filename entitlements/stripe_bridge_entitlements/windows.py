"""Metering windows: when a count starts and when it resets (UTC boundaries).

A meter is counted per customer and window: ``minute``, ``day`` and ``month`` windows start
at UTC boundaries and reset when the next one starts; ``total`` never resets (members,
citizens: what a customer has, counted as usage records add it).
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum


class Window(StrEnum):
    """How long one count lasts before it starts again at zero."""

    MINUTE = "minute"
    DAY = "day"
    MONTH = "month"
    TOTAL = "total"


def window_start(window: Window, when: datetime) -> int:
    """Unix seconds at which the window containing ``when`` started (0 for ``total``)."""
    when = when.astimezone(UTC)
    if window is Window.MINUTE:
        start = when.replace(second=0, microsecond=0)
    elif window is Window.DAY:
        start = when.replace(hour=0, minute=0, second=0, microsecond=0)
    elif window is Window.MONTH:
        start = when.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    else:
        return 0
    return int(start.timestamp())


def reset_at(window: Window, when: datetime) -> datetime | None:
    """When the window containing ``when`` ends and counting starts again (None: never)."""
    start = datetime.fromtimestamp(window_start(window, when), tz=UTC)
    if window is Window.MINUTE:
        return datetime.fromtimestamp(start.timestamp() + 60, tz=UTC)
    if window is Window.DAY:
        return datetime.fromtimestamp(start.timestamp() + 86400, tz=UTC)
    if window is Window.MONTH:
        year, month = (start.year + 1, 1) if start.month == 12 else (start.year, start.month + 1)
        return start.replace(year=year, month=month)
    return None
