"""Run a long-lived billing consumer: settings, NATS, metrics endpoint, SIGTERM drain.

Every consumer starts the same way (docs/billing.md, "Consumers at start"): it has
``NATS_START_TIMEOUT`` seconds to connect to NATS, provision what it needs and bind its
consumer. A failure that heals by itself (NATS down, a stream without quorum) is retried
quietly within that budget; when the budget runs out the consumer logs one line and exits
3 (UNAVAILABLE), and Kubernetes restarts it with its growing back-off. SIGTERM or SIGINT
stops it at any moment, within seconds, with exit 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Awaitable, Callable
from typing import Any

from prometheus_client import CollectorRegistry, start_http_server

from ..config import Settings
from ..exitcodes import ExitCode
from ..jetstream import connect_options
from ..logsetup import configure_logging
from ..ops.natsfaults import is_transient
from ..redact import redact_url

log = logging.getLogger(__name__)

# Exit codes of the consumers: ExitCode (docs/cli.md); invalid configuration is a
# ConfigError, exit CONFIG through the CLI.
#: Pause between two start attempts after a transient failure (a leader election's scale).
_RETRY_PAUSE_SECONDS = 1.0

#: ``bound(registry)``: the worker calls it once its consumer is bound (it serves /metrics).
Bound = Callable[[CollectorRegistry], None]
#: ``worker(nc, stop, bound)``: provision, bind (then call ``bound``), consume until ``stop``.
Worker = Callable[[Any, asyncio.Event, Bound], Awaitable[None]]


def serve_metrics(registry: CollectorRegistry, port: int | None) -> None:
    """Expose ``registry`` on http://127.0.0.1-or-all:port/metrics when ``port`` is set."""
    if port is not None:
        start_http_server(port, registry=registry)
        log.info("metrics on :%d/metrics", port)


class _Stopped(Exception):
    """SIGTERM/SIGINT arrived while starting."""


class _OutOfTime(Exception):
    """The start budget ran out."""


class _Refused(Exception):
    """NATS answered the start with an error that waiting does not heal (a missing stream,
    a permission): Kubernetes' back-off retries it, in case someone fixes it meanwhile."""


class _Connection:
    """The consumer's client and its nats-py callbacks: one line per event, none for a
    clean shutdown."""

    def __init__(self) -> None:
        self.nc: Any = None
        self.closing = False
        self.last_error: BaseException | None = None

    async def close(self) -> None:
        """Drain the connection (unsubscribe, flush), quietly."""
        self.closing = True
        if self.nc is None or self.nc.is_closed:
            return
        if self.nc.is_connected:
            await self.nc.drain()
        else:  # reconnecting: nothing to flush, and drain() would raise
            await self.nc.close()

    async def error(self, exc: Exception) -> None:
        # nats-py's default logs a traceback per failed attempt (twice a second while NATS
        # is down); the start budget and the disconnect line say what matters.
        self.last_error = exc
        log.debug("nats error: %s", type(exc).__name__)

    async def disconnected(self) -> None:
        # drain() at SIGTERM disconnects too: that is no news.
        if self.nc is not None and not self.closing:
            log.warning("nats disconnected")

    async def reconnected(self) -> None:
        log.info("nats reconnected")


async def _within(awaitable: Awaitable[Any], stop: asyncio.Event, deadline: float) -> Any:
    """``awaitable``'s result; cancel it and raise _Stopped or _OutOfTime if either comes first."""
    task = asyncio.ensure_future(awaitable)
    stopped = asyncio.ensure_future(stop.wait())
    remaining = deadline - asyncio.get_running_loop().time()
    try:
        await asyncio.wait(
            {task, stopped}, timeout=max(remaining, 0), return_when=asyncio.FIRST_COMPLETED
        )
    finally:
        stopped.cancel()
    if task.done() and not stop.is_set():
        return task.result()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await task  # its own failure does not matter any more
    raise _Stopped if stop.is_set() else _OutOfTime


async def run_until_stopped(
    settings: Settings, worker: Worker, name: str, metrics_port: int | None = None
) -> int:
    """Set up logging, start ``worker`` within the start budget and run it until
    SIGTERM/SIGINT; return the exit code (0 stopped, 3 NATS not usable in time)."""
    configure_logging(settings.log_level, settings.log_format)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    deadline = loop.time() + settings.nats_start_timeout
    connection = _Connection()
    try:
        nc = await _connect(settings, name, connection, stop, deadline)
        await _start_and_run(nc, worker, stop, deadline, connection, metrics_port)
    except _Stopped:
        log.info("%s stopped while starting", name)
        return ExitCode.OK
    except _OutOfTime:
        problem = "not answering" if connection.nc else "unreachable"
        cause = type(connection.last_error).__name__ if connection.last_error else "no answer"
        log.error(
            "%s: nats %s at %s for NATS_START_TIMEOUT=%gs (last error %s); exiting %d",
            name,
            problem,
            redact_url(settings.nats_url),
            settings.nats_start_timeout,
            cause,
            ExitCode.UNAVAILABLE,
        )
        return ExitCode.UNAVAILABLE
    except _Refused as refused:
        log.error(
            "%s: nats at %s refused the start: %s: %s; exiting %d",
            name,
            redact_url(settings.nats_url),
            type(refused.__cause__).__name__,
            refused.__cause__,
            ExitCode.UNAVAILABLE,
        )
        return ExitCode.UNAVAILABLE
    finally:
        await connection.close()
    log.info("%s stopped", name)
    return ExitCode.OK


async def _connect(
    settings: Settings, name: str, connection: _Connection, stop: asyncio.Event, deadline: float
) -> Any:
    """A connected client, trying every server again until ``deadline``.

    nats-py's own first connect with ``max_reconnect_attempts=-1`` never ends and can swallow
    a cancellation (asyncio.wait_for in Python 3.11), so each attempt tries every server at
    most twice, then this loop decides whether to try again; once connected the client
    reconnects forever (it reads the option on reconnect), as the Publisher's does.
    """
    from nats.aio.client import Client

    options = connect_options(settings)
    options["name"] = f"stripe-bridge/{name}"
    options["max_reconnect_attempts"] = 1
    while True:
        nc = Client()
        attempt = nc.connect(
            error_cb=connection.error,
            disconnected_cb=connection.disconnected,
            reconnected_cb=connection.reconnected,
            **options,
        )
        try:
            await _within(attempt, stop, deadline)
        except (_Stopped, _OutOfTime):
            if not nc.is_closed:
                await nc.close()
            raise
        except Exception as exc:
            # NoServersError after the attempts; the error callback saw each cause.
            log.debug("nats connect failed: %s", type(exc).__name__)
            if not nc.is_closed:
                await nc.close()
            await _within(asyncio.sleep(_RETRY_PAUSE_SECONDS), stop, deadline)
            continue
        nc.options["max_reconnect_attempts"] = -1
        connection.nc = nc
        return nc


async def _start_and_run(
    nc: Any,
    worker: Worker,
    stop: asyncio.Event,
    deadline: float,
    connection: _Connection,
    metrics_port: int | None,
) -> None:
    """Run ``worker``; before it is bound, retry transient failures until ``deadline``."""
    from nats import errors as nats_errors

    bound = asyncio.Event()

    def on_bound(registry: CollectorRegistry) -> None:
        serve_metrics(registry, metrics_port)
        bound.set()

    while True:
        task = asyncio.ensure_future(worker(nc, stop, on_bound))
        try:
            await _within(_until_bound(task, bound), stop, deadline)
        except (_Stopped, _OutOfTime):
            if not bound.is_set():  # bound meanwhile: it runs, and stops on ``stop``
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
                raise
        if bound.is_set():
            await task  # running: its failures are its own to report
            return
        exc = task.exception()
        if exc is None:
            return  # it returned before binding: stop was set
        if isinstance(exc, nats_errors.Error) and not is_transient(exc):
            raise _Refused(exc) from exc
        if not is_transient(exc):
            raise exc
        connection.last_error = exc
        log.debug("start failed, retrying: %s", type(exc).__name__)
        await _within(asyncio.sleep(_RETRY_PAUSE_SECONDS), stop, deadline)


async def _until_bound(task: asyncio.Future[None], bound: asyncio.Event) -> None:
    """Return when ``task`` has ended or called ``bound``."""
    ready: asyncio.Future[Any] = asyncio.ensure_future(bound.wait())
    try:
        await asyncio.wait({task, ready}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        ready.cancel()
