"""Serve functions over HTTP with a lifespan, so SIGTERM drains NATS and pushes metrics.

``function_app`` is the container entrypoint (one function, as Knative runs it: the
target is loaded as functions-framework's ASGI mode loads it, without functions-framework).
``dev_app`` serves every function in one process for local development.
"""

from __future__ import annotations

import contextlib
import importlib.util
import inspect
import math
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from types import FrameType
from typing import Any

from starlette.applications import Starlette
from starlette.routing import Mount, Route
from starlette.types import ASGIApp

from . import registry
from .config import Settings
from .http import (
    STOPPING_BODY_GRACE_SECONDS,
    BodyReader,
    FunctionRuntime,
    HttpFunction,
    function_of,
)
from .ingest import Runtime
from .webhook import WebhookFunction

#: Uvicorn waits this long for in-flight requests on SIGTERM: a body still arriving gets
#: STOPPING_BODY_GRACE_SECONDS, then its publish the default PubAck wait. Under Knative
#: nothing is in flight by then (queue-proxy drained first, see deploy.knative.TIMEOUT_SECONDS);
#: part of the termination budget deploy.knative.APP_SHUTDOWN_SECONDS adds up.
GRACEFUL_SHUTDOWN_SECONDS = math.ceil(
    STOPPING_BODY_GRACE_SECONDS + Settings.model_fields["publish_timeout"].default
)
#: Exit code when the server could not start (e.g. the port is taken), as uvicorn.run uses.
STARTUP_FAILURE_EXIT = 3
_ALL_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]


def _closing(runtime: FunctionRuntime) -> Any:
    """A lifespan that closes ``runtime`` once the server stopped taking requests."""

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        yield
        await runtime.close()

    return lifespan


def load_function(source: Path, target: str = "handle") -> tuple[ASGIApp, HttpFunction[Any]]:
    """Load the ``target`` of ``source``; return it as an ASGI app, and its function.

    The same contract as functions-framework's ASGI loader for an async HTTP target (every
    path and method reaches the target) without importing it: functions-framework brings
    Flask, Werkzeug and Jinja2, about 90 ms of every cold start, for nothing the image uses.
    """
    spec = importlib.util.spec_from_file_location(f"function_{source.parent.name}", source)
    if spec is None or spec.loader is None:
        raise FileNotFoundError(f"cannot load function source {source}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    handler = getattr(module, target, None)
    if handler is None or not inspect.iscoroutinefunction(handler):
        raise AttributeError(f"{source} has no async function named {target!r}")
    routes = [Route(path, handler, methods=_ALL_METHODS) for path in ("/", "/{path:path}")]
    return Starlette(routes=routes), function_of(vars(module), handler)


def function_app(source: Path, target: str = "handle") -> Starlette:
    """One function's ASGI app whose shutdown drains NATS and pushes metrics."""
    app, function = load_function(source, target)
    served = Starlette(routes=[Mount("/", app=app)], lifespan=_closing(function.runtime))
    served.state.reader = function.reader  # for run(), which tells it when SIGTERM arrives
    return served


def dev_app(runtime: Runtime) -> Starlette:
    """Every function in one app: ``/`` accepts all types, ``/<event type>`` just that one."""
    settings = runtime.settings
    reader = BodyReader(settings.max_body_bytes, settings.body_read_timeout_seconds)
    routes: list[Any] = []
    for event_type in registry.EVENT_TYPES:
        path = f"/{event_type.name}"
        handler = WebhookFunction(runtime, frozenset({event_type.name}), path, reader)
        routes.append(Route(path, handler.handle, methods=_ALL_METHODS))
    catch_all = WebhookFunction(runtime, None, "/", reader)
    routes.append(Route("/{path:path}", catch_all.handle, methods=_ALL_METHODS))
    app = Starlette(routes=routes, lifespan=_closing(runtime))
    app.state.reader = reader
    return app


def run(
    app: ASGIApp,
    host: str,
    port: int,
    log_level: str = "warning",
    reader: BodyReader | None = None,
) -> None:
    """Run ``app`` under uvicorn; SIGTERM lets in-flight requests finish, then exits 0.

    Bodies still arriving at SIGTERM get ``reader``'s short grace, not the whole graceful
    period (``function_app`` and ``dev_app`` keep their reader in ``app.state.reader``).
    """
    import uvicorn

    class Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            super().handle_exit(sig, frame)
            if reader is not None:
                reader.begin_shutdown()

    server = Server(
        uvicorn.Config(
            app,
            host=host,
            port=port,
            lifespan="on",
            log_level=log_level,
            timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,
            access_log=False,
        )
    )

    def after_graceful_shutdown(_signum: int, _frame: object) -> None:
        # Uvicorn handles SIGTERM itself while serving, then restores this handler and
        # raises the signal again: with the default handler a clean drain would end as
        # "killed by SIGTERM" (exit 143). Before uvicorn took over nothing is in flight.
        if not server.started:
            raise SystemExit(0)

    previous = signal.signal(signal.SIGTERM, after_graceful_shutdown)
    try:
        server.run()
    finally:
        signal.signal(signal.SIGTERM, previous)
    if not server.started:
        raise SystemExit(STARTUP_FAILURE_EXIT)
