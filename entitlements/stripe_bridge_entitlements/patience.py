"""How long NATS trouble is retried before an answer follows ``when_unavailable``.

A JetStream leader election with quorum kept makes KV requests time out for a few seconds
(about 6 s measured, issue #19). That is not "unavailable": answering by the tier file's
``when_unavailable: allow`` then over-granted a third of a limit. So trouble is retried with
backoff for up to ``unavailable_after`` seconds since it began; once it has lasted that
long, each call tries once and gives up, until a call works again.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


#: NATS trouble worth retrying: client errors (timeouts, no responders, disconnected).
@functools.cache  # an import statement per call cost 3% of a check's CPU
def trouble() -> tuple[type[BaseException], ...]:
    """The exception types that mean NATS did not answer (imported lazily)."""
    from nats import errors

    return (errors.Error, TimeoutError, OSError)


class Unavailable(Exception):
    """NATS has been in trouble for longer than ``unavailable_after``."""


class Patience:
    """Retries NATS trouble for at most ``unavailable_after`` seconds since it began."""

    def __init__(self, unavailable_after: float, attempt_timeout: float) -> None:
        self.unavailable_after = unavailable_after
        self.attempt_timeout = attempt_timeout
        #: When the current run of trouble began (None: the last call worked).
        self.trouble_since: float | None = None

    async def run(
        self, attempt: Callable[[], Awaitable[T]], also: tuple[type[BaseException], ...] = ()
    ) -> T:
        """``attempt()`` until it works, or raise Unavailable (``also``: more trouble)."""
        kinds = trouble() + also
        delay = 0.05
        while True:
            try:
                # asyncio.timeout, not wait_for: no task per attempt (reserve's hot path).
                async with asyncio.timeout(self.attempt_timeout):
                    result = await attempt()
            except kinds as exc:
                now = time.monotonic()
                if self.trouble_since is None:
                    self.trouble_since = now
                left = self.trouble_since + self.unavailable_after - now
                if left <= 0:
                    raise Unavailable(type(exc).__name__) from exc
                await asyncio.sleep(min(delay, left))  # backoff, not synchronisation
                delay = min(delay * 2, 0.5)
                continue
            self.trouble_since = None
            return result
