"""Serve functions over HTTP with a lifespan, so SIGTERM drains NATS and pushes metrics.

``function_app`` is the container entrypoint (one function, as Knative runs it: the
target is loaded as functions-framework's ASGI mode loads it, without functions-framework),
a plain ASGI app with no router or middleware on the request path. ``dev_app`` serves every
function in one process for local development (a Starlette router).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import http
import importlib.metadata
import importlib.util
import inspect
import json
import logging
import signal
import sys
import traceback
import weakref
from collections.abc import AsyncIterator
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any, cast

from . import registry
from .asgi import BODY_RECEIVED
from .config import Settings
from .exitcodes import ExitCode
from .http import (
    STOPPING_BODY_GRACE_SECONDS,
    BodyReader,
    FunctionRuntime,
    HttpFunction,
    graceful_shutdown_seconds,
)
from .runtime import Runtime
from .webhook import WebhookFunction

#: With the default settings uvicorn waits this long for in-flight requests on SIGTERM
#: (``graceful_shutdown_seconds``; a configured PUBLISH_TIMEOUT or
#: STOPPING_BODY_GRACE_SECONDS widens it). Under Knative nothing is in flight by then
#: (queue-proxy drained first, see deploy.knative.TIMEOUT_SECONDS); part of the termination
#: budget deploy.knative.APP_SHUTDOWN_SECONDS adds up, which the manifests' defaults keep.
GRACEFUL_SHUTDOWN_SECONDS = graceful_shutdown_seconds(
    STOPPING_BODY_GRACE_SECONDS, Settings.model_fields["publish_timeout"].default
)
#: Default of HEADER_READ_TIMEOUT_SECONDS: Stripe and queue-proxy send a request's headers
#: at once; only a stalled or hostile client needs longer.
HEADER_READ_TIMEOUT_SECONDS = 5.0

#: The garbage collector's young-generation threshold while serving (CPython's default is
#: 700). With 32 webhooks in flight, each holding its parsed body, a young collection
#: every ~30 webhooks scanned them all and promoted them to older generations, whose
#: collections scanned them again: ~7-13 us of a webhook's CPU (bench/README.md, #20).
SERVING_GC_THRESHOLD = 7000

if TYPE_CHECKING:
    from starlette.applications import Starlette
    from starlette.types import ASGIApp, Receive, Scope, Send
    from uvicorn.config import Config
    from uvicorn.server import Server

log = logging.getLogger(__name__)


def _closing(runtime: FunctionRuntime) -> Any:
    """A lifespan that closes ``runtime`` once the server stopped taking requests."""

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        yield
        await runtime.close()

    return lifespan


class FunctionApp:
    """One function as a plain ASGI app: every request, any path and method, is its target's.

    What functions-framework's ASGI loader routes to an async target, without a router and
    its middleware on each request (they cost ~15 % of a webhook's handling). The lifespan's
    shutdown closes the runtime (drain NATS, final metrics push) once the server stopped
    taking requests.
    """

    def __init__(self, function: HttpFunction[Any]) -> None:
        self.function = function
        #: For ``run``, which tells it when SIGTERM arrives.
        self.reader = function.reader

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The ASGI entry point: HTTP requests and the lifespan (nothing else is served)."""
        if scope["type"] == "http":
            await self.function(scope, receive, send)
        elif scope["type"] == "lifespan":
            await self._lifespan(receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                try:
                    await self.function.runtime.close()
                except BaseException:
                    failed = {"type": "lifespan.shutdown.failed", "message": traceback.format_exc()}
                    await send(failed)
                    raise
                await send({"type": "lifespan.shutdown.complete"})
                return


def load_function(source: Path, target: str = "handle") -> tuple[FunctionApp, HttpFunction[Any]]:
    """Load the function of ``source``; return it as an ASGI app, and the function.

    ``target`` must name an async function there, as functions-framework's ASGI loader
    requires (the same ``FUNCTION_TARGET`` serves under both); the app calls the module's
    ``function`` itself. Every path and method reaches it, as under functions-framework,
    without importing that: it brings Flask, Werkzeug and Jinja2, about 90 ms of every cold
    start, for nothing the image uses.
    """
    spec = importlib.util.spec_from_file_location(f"function_{source.parent.name}", source)
    if spec is None or spec.loader is None:
        raise FileNotFoundError(f"cannot load function source {source}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    handler = getattr(module, target, None)
    if handler is None or not inspect.iscoroutinefunction(handler):
        raise AttributeError(f"{source} has no async function named {target!r}")
    # Every module under functions/ keeps its function as ``function`` (deploy.codegen);
    # served directly, without the target's extra await.
    function = getattr(module, "function", None)
    if not isinstance(function, HttpFunction):
        raise TypeError(f"{source} has no stripe-bridge function named 'function'")
    return FunctionApp(function), function


def function_app(source: Path, target: str = "handle") -> FunctionApp:
    """One function's ASGI app whose shutdown drains NATS and pushes metrics."""
    app, _function = load_function(source, target)
    return app


def dev_app(runtime: Runtime) -> Starlette:
    """Every function in one app: ``/`` accepts all types, ``/<event type>`` just that one."""
    # Imported here: a function's cold start has no use for the router.
    from starlette.applications import Starlette
    from starlette.routing import Route

    settings = runtime.settings
    reader = BodyReader.for_settings(settings)
    routes: list[Any] = []
    # Each route to an ASGI app (FunctionApp), not a request handler: Starlette then
    # passes every method through, so the function answers 404 before its method check.
    for event_type in registry.EVENT_TYPES:
        path = f"/{event_type.name}"
        handler = WebhookFunction(runtime, frozenset({event_type.name}), path, reader)
        routes.append(Route(path, FunctionApp(handler)))
    catch_all = WebhookFunction(runtime, None, "/", reader)
    routes.append(Route("/{path:path}", FunctionApp(catch_all)))
    app = Starlette(routes=routes, lifespan=_closing(runtime))
    app.state.reader = reader
    return app


def _late_headers_answer(function: HttpFunction[Any] | None, seconds: float) -> bytes:
    """The 408 for a request whose headers are late, counted and logged by ``function``."""
    if function is None:
        body: Any = {"error": "header_read_timeout"}
        headers: dict[str, str] = {}
    else:
        reply = function.headers_timed_out(seconds)
        body, headers = reply.body, reply.headers
    content = json.dumps(body).encode()
    status = http.HTTPStatus.REQUEST_TIMEOUT
    lines = [f"HTTP/1.1 {status.value} {status.phrase}", "content-type: application/json"]
    lines += [f"{k}: {v}" for k, v in headers.items() if k.lower() != "connection"]
    lines += [f"content-length: {len(content)}", "connection: close", "", ""]
    return "\r\n".join(lines).encode() + content


class CoalescingTransport:
    """A transport whose writes of one event-loop step leave in one ``send``.

    Uvicorn writes an answer's head and its body apart: two system calls per answer, a third
    of the entitlements function's CPU per check in py-spy (issue #19). The writes are
    joined and sent at the end of the step (``call_soon``), or at once beyond ``BOUND``
    bytes (a streaming answer must reach the socket's transport, whose flow control then
    pauses the writer). ``close`` and ``write_eof`` send them first, and so must the
    protocol before anything closes the socket's transport itself (its ``eof_received``).
    Everything else is the wrapped transport's.
    """

    #: Bytes joined at most (asyncio's default high-water mark of a socket transport).
    BOUND = 64 * 1024

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._pending: list[bytes] = []
        self._size = 0

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Send ``data`` with the step's other writes (at once beyond ``BOUND``)."""
        if not self._pending:
            self._loop.call_soon(self.flush)
        self._pending.append(bytes(data))
        self._size += len(data)
        if self._size > self.BOUND:
            self.flush()

    def flush(self) -> None:
        """Send what was written (nothing once the connection is closing)."""
        if self._pending:
            data = b"".join(self._pending)
            self._pending.clear()
            self._size = 0
            if not self._transport.is_closing():
                self._transport.write(data)

    def close(self) -> None:
        """Send what was written, then close."""
        self.flush()
        self._transport.close()

    def write_eof(self) -> None:
        """Send what was written, then half-close."""
        self.flush()
        self._transport.write_eof()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


def header_timeout_protocol(
    seconds: float, function: HttpFunction[Any] | None = None
) -> type[asyncio.Protocol] | str:
    """Uvicorn's httptools protocol, closing connections whose request headers are late.

    Uvicorn bounds idle keep-alive connections, but not a request whose headers stall nor
    a new connection that sends nothing: either held its connection as long as the client
    liked. A request started and unfinished after ``seconds`` is answered 408 (counted and
    logged by ``function``), a connection silent since it opened is closed. A request whose
    headers come in one read, the usual case, arms no timer.

    httptools is a runtime dependency (the image has it); without it (the benchmark's h11
    reference run) uvicorn's own h11 protocol serves, with no header timeout, said once.
    """
    try:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
    except ImportError:
        log.warning("httptools is not installed: no header read timeout (h11 fallback)")
        return "h11"

    class HeaderTimeoutProtocol(HttpToolsProtocol):
        awaiting_headers = False
        header_timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self.transport = cast(asyncio.Transport, CoalescingTransport(transport, self.loop))
            self.header_timer = self.loop.call_later(seconds, self.headers_late)

        def eof_received(self) -> None:
            # The socket's transport closes itself after this (uvicorn keeps no half-open
            # connection): what was written in this loop pass must leave first.
            cast(CoalescingTransport, self.transport).flush()
            super().eof_received()

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            if self.awaiting_headers and self.header_timer is None:
                self.header_timer = self.loop.call_later(seconds, self.headers_late)

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self.awaiting_headers = True

        def on_headers_complete(self) -> None:
            self.awaiting_headers = False
            self.stop_header_timer()
            super().on_headers_complete()
            # The function reads the body without a timer when it is all here already
            # (``asgi.BODY_RECEIVED``); uvicorn sets ``more_body`` False once it is. A weak
            # reference: the cycle holds the scope, which must not hold the cycle (a
            # reference cycle per request would be left to the garbage collector).
            if self.cycle is not None and self.cycle.scope is self.scope:
                cycle = weakref.ref(self.cycle)

                def received() -> bool:
                    current = cycle()
                    return current is not None and not current.more_body

                extensions = self.scope.setdefault("extensions", {})
                extensions[BODY_RECEIVED] = {"received": received}

        def connection_lost(self, exc: Exception | None) -> None:
            self.stop_header_timer()
            super().connection_lost(exc)

        def stop_header_timer(self) -> None:
            if self.header_timer is not None:
                self.header_timer.cancel()
                self.header_timer = None

        def headers_late(self) -> None:
            self.header_timer = None
            if self.transport.is_closing():
                return
            if self.awaiting_headers:
                self.transport.write(_late_headers_answer(function, seconds))
            self.transport.close()

    return HeaderTimeoutProtocol


def import_uvicorn() -> tuple[type[Config], type[Server]]:
    """uvicorn's ``Config`` and ``Server``, without its command line if none imported it yet.

    ``uvicorn/__init__.py`` imports ``uvicorn.main`` (the ``uvicorn`` command, and click
    with it) only to re-export ``run`` and ``main``: ~15 % of a function's imports for
    nothing ``serve`` calls (bench/README.md, issue #20). So the package is set up here
    without running its ``__init__``: it gets the two names uvicorn's own modules import
    from it (``lifespan/on.py``: ``from uvicorn import Config``), and any other name (``run``,
    ``main``) imports ``uvicorn.main`` on first use, as the whole package would have it.
    """
    if "uvicorn" in sys.modules:  # already whole (the dev server in a test, a bench)
        import uvicorn

        return uvicorn.Config, uvicorn.Server
    spec = importlib.util.find_spec("uvicorn")
    if spec is None:
        raise ModuleNotFoundError("uvicorn is not installed", name="uvicorn")
    package = importlib.util.module_from_spec(spec)

    def attribute(name: str) -> Any:
        if name == "__version__":
            # The constant ``__init__`` would have set (tools and error reports read it),
            # looked up when read: the metadata lookup costs 2-3 ms of a cold start.
            return importlib.metadata.version("uvicorn")
        return getattr(importlib.import_module("uvicorn.main"), name)

    package.__getattr__ = attribute  # type: ignore[method-assign]
    sys.modules["uvicorn"] = package
    try:
        from uvicorn.config import Config
        from uvicorn.server import Server
    except BaseException:
        del sys.modules["uvicorn"]
        raise
    package.Config, package.Server = Config, Server  # type: ignore[attr-defined]
    return Config, Server


def settle_heap() -> None:
    """Set the garbage collector for serving: what is loaded so far stays out of its scans.

    Everything the process holds before its first request (modules, the function, its
    settings and models) lives as long as the process: ``gc.freeze`` keeps it out of
    every later collection (a full one scanned it all, ~4-10 ms, every so many thousand
    webhooks), and the young generation's threshold rises to ``SERVING_GC_THRESHOLD``.
    Reference counting still frees everything acyclic at once; only cyclic garbage waits
    for a collection, for a few thousand more allocations.
    """
    gc.freeze()
    _young, middle, old = gc.get_threshold()
    gc.set_threshold(SERVING_GC_THRESHOLD, middle, old)


def run(
    app: ASGIApp,
    host: str,
    port: int,
    log_level: str = "warning",
    reader: BodyReader | None = None,
    header_timeout: float = HEADER_READ_TIMEOUT_SECONDS,
    function: HttpFunction[Any] | None = None,
    graceful_shutdown: int = GRACEFUL_SHUTDOWN_SECONDS,
) -> None:
    """Run ``app`` under uvicorn; SIGTERM lets in-flight requests finish, then exits 0.

    Bodies still arriving at SIGTERM get ``reader``'s short grace, not the whole graceful
    period (``function_app`` keeps its reader in ``app.reader``, ``dev_app`` in
    ``app.state.reader``); in-flight requests get ``graceful_shutdown`` seconds
    (``graceful_shutdown_seconds`` of the served settings). Request headers must arrive
    within ``header_timeout`` seconds; ``function`` counts and logs the 408s
    (``header_timeout_protocol``).
    """
    config_type, server_type = import_uvicorn()

    class Server(server_type):  # type: ignore[valid-type,misc]
        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            super().handle_exit(sig, frame)
            if reader is not None:
                reader.begin_shutdown()

    server = Server(
        config_type(
            app,
            host=host,
            port=port,
            lifespan="on",
            http=header_timeout_protocol(header_timeout, function),
            log_level=log_level,
            timeout_graceful_shutdown=graceful_shutdown,
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
    settle_heap()
    try:
        server.run()
    finally:
        signal.signal(signal.SIGTERM, previous)
    if not server.started:
        # It never served: the port is taken or unusable (uvicorn.run exits 3 too).
        raise SystemExit(ExitCode.UNAVAILABLE)
