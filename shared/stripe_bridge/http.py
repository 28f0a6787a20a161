"""The HTTP shell every function shares, webhook and billing alike.

``HttpFunction.handle`` answers every request of a function, read top to bottom:

1. the probes, answered here: ``GET``/``HEAD`` ``/healthz`` 200 (alive), ``/readyz`` 200
   or 503 (the function's own dependencies), ``/metrics`` (its collectors); other methods
   there get 405 ``Allow: GET``;
2. ``respond``: the function's own steps (``webhook.py``, ``billing/endpoints.py``). They
   take the body through ``post_body`` (``POST`` only, 405 ``Allow: POST``; at most
   ``max_body_bytes``, 413 as soon as the ``Content-Length`` or the streamed body exceeds
   it; within the ``BodyReader``'s timeout, 408; 499 when the client leaves; after SIGTERM
   a short grace, then 503 ``shutting_down``) and end a request early by raising
   ``Refused`` with a ``Reason``, which ``refused`` turns into the function's reply;
3. the reply, counted and logged once (``record``), sent as JSON.

The function itself is the ASGI app the server runs (``__call__``: plain ASGI, ``asgi.py``);
``handle_starlette`` answers the same through Starlette's request and response, for
functions-framework's target.

``start`` builds a function at import time of ``functions/<name>/main.py``: one logging
setup, and invalid configuration exits 2 with one line. The module keeps it as
``function``, which ``server.load_function`` serves directly; its ``handle`` there is a
plain coroutine function awaiting ``function.handle_starlette``, because
functions-framework takes no method as a target.
"""

from __future__ import annotations

import asyncio
import math
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from .asgi import Answer, ClientDisconnected, HttpRequest, answer, json_answer
from .config import ConfigError, Settings, load_settings, report_config_error
from .logsetup import configure_logging
from .reasons import Reason, Refused

if TYPE_CHECKING:
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.types import Receive, Scope, Send

PROBES = ("/healthz", "/readyz", "/metrics")
#: Default of STOPPING_BODY_GRACE_SECONDS: how long a body still arriving at SIGTERM may
#: take before it is answered 503.
STOPPING_BODY_GRACE_SECONDS: float = Settings.model_fields["stopping_body_grace_seconds"].default
#: Default of ``BodyReader``'s timeout (the webhook functions use BODY_READ_TIMEOUT_SECONDS).
BODY_READ_TIMEOUT_SECONDS = 10.0


class FunctionRuntime(Protocol):
    """What the shell asks of a function's process-wide parts."""

    #: Its configuration; the server's graceful shutdown follows its PUBLISH_TIMEOUT.
    settings: Settings

    @property
    def collectors(self) -> CollectorRegistry:
        """The Prometheus collectors ``/metrics`` exposes."""
        ...

    async def ready(self) -> bool:
        """Whether the function can do its work now (``/readyz``)."""
        ...

    async def close(self) -> None:
        """Drain and release everything (the server's shutdown, on SIGTERM)."""
        ...


@dataclass
class Reply:
    """One request's answer, plus the metric outcome and reason it is counted under."""

    status: int
    body: Any
    outcome: str
    reason: str = ""
    headers: dict[str, str] = field(default_factory=dict)


ReplyT = TypeVar("ReplyT", bound=Reply)


class BodyReader:
    """Reads request bodies up to a size, within a time; after SIGTERM within a short grace.

    One per server (``server.run`` calls ``begin_shutdown``): a client that is sending
    finishes and is answered as usual, a stalled one cannot hold the shutdown (nothing is
    done with a request before its body is complete).
    """

    def __init__(
        self,
        max_bytes: int,
        timeout: float = BODY_READ_TIMEOUT_SECONDS,
        stopping_grace: float = STOPPING_BODY_GRACE_SECONDS,
    ) -> None:
        self.max_bytes = max_bytes
        self.timeout = timeout
        self.stopping_grace = stopping_grace
        self.stopping = False
        self._reads: set[asyncio.Timeout] = set()

    @classmethod
    def for_settings(cls, settings: Settings) -> BodyReader:
        """The reader of a webhook function (or ``dev``): every bound from ``settings``."""
        return cls(
            settings.max_body_bytes,
            settings.body_read_timeout_seconds,
            settings.stopping_body_grace_seconds,
        )

    async def read(self, request: HttpRequest) -> bytes | None:
        """The body, or None once it is known to exceed ``max_bytes``.

        Raises TimeoutError when it takes too long, ClientDisconnected when the client leaves.
        """
        if request.body_received():
            # Nothing to wait for (the usual webhook: headers and body in one read): no
            # timer to arm and cancel (~3.5 us of a request).
            return await _read_limited(request, self.max_bytes)
        deadline = asyncio.get_running_loop().time() + self.timeout
        if self.stopping:
            deadline = min(deadline, self._grace_deadline())
        async with asyncio.timeout_at(deadline) as timeout:
            self._reads.add(timeout)
            try:
                return await _read_limited(request, self.max_bytes)
            finally:
                self._reads.discard(timeout)

    def begin_shutdown(self) -> None:
        """SIGTERM arrived; safe to call from a signal handler on the event loop's thread."""
        self.stopping = True
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        loop.call_soon_threadsafe(self._shorten_reads)

    def _shorten_reads(self) -> None:
        for timeout in self._reads:
            timeout.reschedule(min(timeout.when() or 0.0, self._grace_deadline()))

    def _grace_deadline(self) -> float:
        return asyncio.get_running_loop().time() + self.stopping_grace


def graceful_shutdown_seconds(stopping_grace: float, publish_timeout: float) -> int:
    """How long the server waits for in-flight requests after SIGTERM.

    A body still arriving gets the reader's ``stopping_grace``, then its publish the
    configured PubAck wait (``publish_timeout``): with a shorter window a delivery waiting
    for its PubAck is cut without an answer (Stripe retries it, but only after its own
    timeout).
    """
    return math.ceil(stopping_grace + publish_timeout)


class HttpFunction(ABC, Generic[ReplyT]):
    """One function behind the shared HTTP contract; subclasses respond, refuse and record."""

    def __init__(
        self, runtime: FunctionRuntime, max_body_bytes: int, reader: BodyReader | None = None
    ) -> None:
        self.runtime = runtime
        self.max_body_bytes = max_body_bytes
        grace = runtime.settings.stopping_body_grace_seconds
        self.reader = reader or BodyReader(max_body_bytes, stopping_grace=grace)

    def graceful_shutdown_seconds(self) -> int:
        """How long the server waits for this function's in-flight requests after SIGTERM."""
        publish_timeout = self.runtime.settings.publish_timeout
        return graceful_shutdown_seconds(self.reader.stopping_grace, publish_timeout)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The function as a plain ASGI app: any HTTP request, any path and method."""
        reply = await self.handle(HttpRequest(scope, receive))
        await reply.send(send)

    async def handle_starlette(self, request: Request) -> Response:
        """``handle`` through Starlette's request and response (functions-framework's target)."""
        from starlette.responses import Response  # only functions-framework needs it

        reply = await self.handle(HttpRequest(request.scope, request.receive))
        response = Response(reply.body, reply.status)
        response.raw_headers = list(reply.headers)
        return response

    async def handle(self, request: HttpRequest) -> Answer:
        """Probes, then one counted and logged reply per request."""
        path = request.path.rstrip("/")
        if path in PROBES:
            if request.method not in ("GET", "HEAD"):
                return _METHOD_NOT_ALLOWED
            return await self._probe(path)
        started = time.perf_counter()
        try:
            reply = await self.respond(request, path)
        except Refused as refusal:
            reply = self.refused(refusal)
        self.record(reply, time.perf_counter() - started)
        return json_answer(reply.status, reply.body, reply.headers)

    @abstractmethod
    async def respond(self, request: HttpRequest, path: str) -> ReplyT:
        """The reply to a request past the probes (``path`` without a trailing ``/``);
        raises Refused to end it early."""

    @abstractmethod
    def refused(self, refusal: Refused) -> ReplyT:
        """The reply to a request ended by ``refusal``."""

    @abstractmethod
    def record(self, reply: ReplyT, seconds: float) -> None:
        """Count and log one reply (never the body or a secret)."""

    async def post_body(self, request: HttpRequest) -> bytes:
        """The body of a POST within the size and time limits; raises Refused otherwise."""
        if request.method != "POST":
            raise Refused(Reason.METHOD_NOT_ALLOWED, "use POST", {"Allow": "POST"})
        try:
            body = await self.reader.read(request)
        except ClientDisconnected:
            raise Refused(Reason.CLIENT_DISCONNECTED, "the client left mid-body") from None
        except TimeoutError:
            # The unread rest of the body cannot be skipped: close the connection.
            close = {"Connection": "close"}
            if self.reader.stopping:
                raise Refused(Reason.SHUTTING_DOWN, "stopping; retry", close) from None
            detail = f"body not received within {self.reader.timeout:g} s"
            raise Refused(Reason.BODY_READ_TIMEOUT, detail, close) from None
        if body is None:
            raise Refused(Reason.BODY_TOO_LARGE, f"limit is {self.max_body_bytes} bytes")
        return body

    def headers_timed_out(self, seconds: float) -> ReplyT:
        """A request's headers did not arrive within ``seconds``: counted and logged like
        every refusal; the server writes the reply and closes the connection.
        """
        detail = f"request headers not received within {seconds:g} s"
        reply = self.refused(Refused(Reason.HEADER_READ_TIMEOUT, detail, {"Connection": "close"}))
        self.record(reply, seconds)
        return reply

    async def _probe(self, path: str) -> Answer:
        if path == "/healthz":
            return _ALIVE
        if path == "/metrics":
            metrics = generate_latest(self.runtime.collectors)
            return answer(200, metrics, CONTENT_TYPE_LATEST.encode("latin-1"))
        return _READY if await self.runtime.ready() else _NOT_READY


_METHOD_NOT_ALLOWED = json_answer(405, {"error": "method_not_allowed"}, {"Allow": "GET"})
_ALIVE = json_answer(200, {"status": "alive"})
_READY = json_answer(200, {"status": "ready"})
_NOT_READY = json_answer(503, {"status": "not_ready", "error": "nats_or_stream_unavailable"})


async def _read_limited(request: HttpRequest, limit: int) -> bytes | None:
    """The body, or None as soon as it is known to exceed ``limit`` bytes."""
    declared = request.header("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        return None
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


FunctionT = TypeVar("FunctionT", bound=HttpFunction[Any])


def start(name: str, make: Callable[[Settings], FunctionT]) -> FunctionT:
    """The function of ``functions/<name>/main.py``: ``make`` it now.

    Settings are read at import, so invalid configuration stops the process at start with
    one clear line (exit 2); connections open on first use.
    """
    try:
        settings = load_settings()
        configure_logging(settings.log_level, settings.log_format)
        return make(settings)
    except ConfigError as exc:
        raise SystemExit(report_config_error(f"stripe-bridge {name}", exc)) from None
