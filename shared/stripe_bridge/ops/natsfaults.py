"""Which NATS failures are worth retrying: the ones a leader election or a restart heals."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")
#: Pause between two tries of a request that failed transiently.
RETRY_PAUSE_SECONDS = 0.5


def is_transient(exc: BaseException) -> bool:
    """Whether ``exc`` is a NATS or JetStream failure that heals by itself, in seconds.

    A request timeout or "no responders" (the server or the stream leader is gone), and
    JetStream's 503 (no quorum, no leader yet: an R3 stream just created, or a leader
    moving). Everything else (a refused password, a bad configuration, a missing stream)
    is not retried: the caller reports it.
    """
    from nats.js import errors as js_errors

    from nats import errors as nats_errors

    # nats-py's TimeoutError subclasses asyncio's, which is the builtin one.
    transient = (TimeoutError, nats_errors.NoRespondersError, js_errors.ServiceUnavailableError)
    return isinstance(exc, transient)


async def retrying(call: Callable[[], Awaitable[T]], seconds: float) -> T:
    """``await call()``, tried again after each transient failure for up to ``seconds``."""
    started = time.monotonic()
    while True:
        try:
            return await call()
        except Exception as exc:
            if not is_transient(exc) or time.monotonic() - started > seconds:
                raise
        await asyncio.sleep(RETRY_PAUSE_SECONDS)
