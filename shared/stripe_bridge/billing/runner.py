"""Run a long-lived billing consumer: settings, NATS, metrics endpoint, SIGTERM drain."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Awaitable, Callable
from typing import Any

from prometheus_client import CollectorRegistry, start_http_server

from ..config import Settings, configure_logging, redact_url
from ..exitcodes import ExitCode
from ..jetstream import connect_options

log = logging.getLogger(__name__)

#: Exit codes of the consumers (the table in docs/cli.md; docs/billing.md).
EXIT_OK = ExitCode.OK
EXIT_NATS = ExitCode.UNAVAILABLE
EXIT_AUTH = ExitCode.UNAVAILABLE
# Invalid configuration exits with config.EXIT_CONFIG (2), through the CLI.


def serve_metrics(registry: CollectorRegistry, port: int | None) -> None:
    """Expose ``registry`` on http://127.0.0.1-or-all:port/metrics when ``port`` is set."""
    if port is not None:
        start_http_server(port, registry=registry)
        log.info("metrics on :%d/metrics", port)


async def run_until_stopped(
    settings: Settings, worker: Callable[[Any, asyncio.Event], Awaitable[None]], name: str
) -> int:
    """Set up logging, connect to NATS and run ``worker(nc, stop)`` until SIGTERM/SIGINT;
    return the exit code."""
    import nats

    configure_logging(settings.log_level, settings.log_format)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    options = connect_options(settings)
    options["name"] = f"stripe-bridge/{name}"
    try:
        nc = await nats.connect(**options)
    except Exception as exc:
        log.error("nats unreachable at %s: %s", redact_url(settings.nats_url), type(exc).__name__)
        return EXIT_NATS
    try:
        await worker(nc, stop)
    finally:
        await nc.drain()
    log.info("%s stopped", name)
    return EXIT_OK
