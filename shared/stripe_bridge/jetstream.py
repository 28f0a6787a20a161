"""One lazily opened, reused NATS connection per process, and publishing with a PubAck."""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from .config import RECONNECT_WAIT_SECONDS, Settings
from .inbox import inbox_prefix
from .reasons import Reason

log = logging.getLogger(__name__)

#: How long a positive "the stream exists" answer is trusted by /readyz.
_STREAM_CHECK_TTL = 10.0


#: JetStream error codes meaning "no room": insufficient resources, account resources
#: exceeded, insufficient storage, and the stream's own store refusing the write (10077,
#: e.g. "maximum bytes exceeded" of a max_bytes stream discarding new; it comes with code
#: 503, which without this would read as a lost quorum) (nats-server server/errors.json).
_STORAGE_FULL_CODES = frozenset({10023, 10002, 10047, 10077})
#: JetStream error code of "stream not found" (nats-server server/errors.json).
_STREAM_NOT_FOUND = 10059
#: How long telling a missing stream from a leaderless one may take after a failed publish.
_STREAM_CHECK_SECONDS = 1.0


class PublishError(Exception):
    """The message was not durably stored (or we cannot know that it was); ``reason`` why."""

    def __init__(self, reason: Reason, detail: str = "") -> None:
        super().__init__(f"{reason.value}: {detail}" if detail else reason.value)
        self.reason = reason


class MessageTooLarge(Exception):
    """The message can never be published: it is over the server's ``max_payload``."""

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(f"message of {size} bytes over max_payload {limit}")
        self.size = size
        self.limit = limit


#: Makes JetStream refuse a message that would land in another stream than the bridge's.
EXPECTED_STREAM_HEADER = "Nats-Expected-Stream"


def wire_size(body: bytes, headers: dict[str, str]) -> int:
    """Bytes the server counts against ``max_payload``: headers (NATS/1.0 block) plus body.

    Exactly what nats-py writes for ``headers`` (``Key: value`` lines, CRLF-terminated).
    """
    header_block = len("NATS/1.0\r\n\r\n") + sum(
        len(key.encode()) + len(value.encode()) + 4 for key, value in headers.items()
    )
    return header_block + len(body)


@dataclass(frozen=True)
class Stored:
    """A PubAck: where the message is, and whether JetStream saw it before."""

    stream: str
    seq: int
    duplicate: bool


#: A SIGTERM drain gives up after this long; part of the termination budget that
#: stripe_bridge.deploy.knative adds up (knative.APP_SHUTDOWN_SECONDS).
DRAIN_TIMEOUT_SECONDS = 5


def connect_options(settings: Settings) -> dict[str, Any]:
    """nats-py ``connect`` keyword arguments shared by every client of the bridge."""
    options: dict[str, Any] = {
        "servers": [url.strip() for url in settings.nats_url.split(",")],
        "connect_timeout": settings.nats_connect_timeout,
        "allow_reconnect": True,
        "max_reconnect_attempts": -1,
        "reconnect_time_wait": RECONNECT_WAIT_SECONDS,
        "drain_timeout": DRAIN_TIMEOUT_SECONDS,
        # No buffering while disconnected: a publish fails at once (503) instead of
        # sitting in a buffer and landing later, after Stripe was told to retry.
        "pending_size": 0,
        "name": f"stripe-bridge/{settings.function_name or 'cli'}",
    }
    if settings.nats_creds:
        options["user_credentials"] = settings.nats_creds
    if settings.nats_user:
        options["user"] = settings.nats_user
    # The user may also come in the URL (``nats://admin:...@nats:4222``, as operators run
    # the CLI); nats.conf lets it subscribe only to its own inbox either way.
    user = settings.nats_user or urlsplit(options["servers"][0]).username
    options["inbox_prefix"] = inbox_prefix(user)
    if settings.nats_password:
        options["password"] = settings.nats_password.get_secret_value()
    return options


def import_nats(settings: Settings) -> Any:
    """``import nats``, skipping nats-py's optional aiohttp import unless a URL needs it.

    nats-py imports aiohttp (its WebSocket transport) whenever aiohttp is installed (the
    Kubernetes client pulls it in): the heaviest import of a function's cold start, and
    useless for ``nats://``/``tls://`` URLs. The block lasts only for this first import, so
    aiohttp stays importable by everything else (but a process that imported nats this way
    cannot later open a ``ws://`` connection: settings are per process, so none does).
    """
    urls = [url.strip() for url in settings.nats_url.split(",")]
    websocket = any(url.startswith(("ws://", "wss://")) for url in urls)
    block = not websocket and "nats" not in sys.modules and "aiohttp" not in sys.modules
    if block:
        sys.modules["aiohttp"] = None  # type: ignore[assignment]  # `import aiohttp` fails
    try:
        import nats
    finally:
        if block:
            del sys.modules["aiohttp"]
    return nats


def _api_failure(exc: Any) -> Reason:
    if exc.err_code in _STORAGE_FULL_CODES:
        return Reason.STORAGE_FULL
    if exc.code == 503:  # "JetStream system temporarily unavailable": no leader
        return Reason.STREAM_UNAVAILABLE
    return Reason.JETSTREAM_ERROR


class JetStreamPublisher:
    """Publishes to the bridge's stream over a connection opened on first use."""

    def __init__(
        self, settings: Settings, on_connection_change: Callable[[bool], None] | None = None
    ) -> None:
        self._settings = settings
        self._nc: Any = None
        self._js: Any = None
        self._lock = asyncio.Lock()
        self._stream_seen_at = 0.0
        self._failed_at = float("-inf")
        self._on_change = on_connection_change or (lambda _connected: None)
        self._closing = False

    @property
    def connected(self) -> bool:
        """Whether the connection is up right now."""
        return bool(self._nc is not None and self._nc.is_connected)

    async def _connection(self) -> Any:
        if self._nc is not None and not self._nc.is_closed:
            return self._js
        arrived = time.monotonic()
        async with self._lock:
            if self._nc is not None and not self._nc.is_closed:
                return self._js
            # Requests that queued behind a failed attempt fail at once: one attempt per
            # outage burst, not one each, keeps every answer far inside Stripe's 30 s.
            if self._failed_at >= arrived or arrived - self._failed_at < RECONNECT_WAIT_SECONDS:
                raise PublishError(Reason.NATS_UNAVAILABLE, "connect failed moments ago")
            nats = import_nats(self._settings)  # deferred: keeps module import cheap

            async def disconnected() -> None:
                if not self._closing:  # close() disconnects too: that is no news
                    log.warning("nats disconnected")
                self._on_change(False)

            async def reconnected() -> None:
                log.info("nats reconnected")
                self._on_change(True)

            async def error(exc: Exception) -> None:
                log.warning("nats error: %s", type(exc).__name__)

            options = connect_options(self._settings)
            # With max_reconnect_attempts=-1 nats-py retries the *first* connect forever;
            # a webhook must get its 503 instead, so try each server once, then switch to
            # reconnecting forever once connected (the client reads this option on reconnect).
            options["max_reconnect_attempts"] = 1
            try:
                nc = await nats.connect(
                    disconnected_cb=disconnected,
                    reconnected_cb=reconnected,
                    error_cb=error,
                    **options,
                )
            except Exception as exc:
                self._failed_at = time.monotonic()
                self._on_change(False)
                raise PublishError(Reason.NATS_UNAVAILABLE, type(exc).__name__) from exc
            nc.options["max_reconnect_attempts"] = -1
            if self._settings.max_body_bytes > nc.max_payload:
                log.warning(
                    "MAX_BODY_BYTES=%d is over the server's max_payload=%d: events near the"
                    " body limit are refused as event_too_large",
                    self._settings.max_body_bytes,
                    nc.max_payload,
                )
            self._nc = nc
            self._js = nc.jetstream(timeout=self._settings.publish_timeout)
            self._on_change(True)
            return self._js

    async def publish(self, subject: str, body: bytes, headers: dict[str, str]) -> Stored:
        """Publish and wait for the PubAck; raise PublishError unless it is stored.

        A message over the server's ``max_payload`` raises MessageTooLarge without being
        sent: the server would close the connection, failing every publish in flight on it.
        """
        js = await self._connection()  # first: it imports nats the cheap way (import_nats)
        from nats.js import errors as js_errors

        from nats import errors as nats_errors

        # The headers as they go on the wire, then their size: given ``stream=``, nats-py
        # would add Nats-Expected-Stream (into the caller's dict) after any check here, and
        # bodies within those bytes of the limit made the server drop the connection.
        final = {**headers, EXPECTED_STREAM_HEADER: self._settings.nats_stream}
        size, limit = wire_size(body, final), self._nc.max_payload
        if size > limit:
            raise MessageTooLarge(size, limit)
        try:
            ack = await js.publish(
                subject, body, timeout=self._settings.publish_timeout, headers=final
            )
        except js_errors.NoStreamResponseError as exc:
            # nats-py's name for "no responders": the stream is missing, or it has no
            # leader right now (quorum lost, election under way). Only the API tells which.
            raise PublishError(await self._why_no_stream(js)) from exc
        except (TimeoutError, nats_errors.TimeoutError) as exc:
            raise PublishError(Reason.PUBACK_TIMEOUT) from exc
        except js_errors.APIError as exc:
            raise PublishError(_api_failure(exc), str(exc.description)) from exc
        except (nats_errors.Error, OSError) as exc:
            raise PublishError(Reason.NATS_UNAVAILABLE, type(exc).__name__) from exc
        return Stored(ack.stream, ack.seq, bool(ack.duplicate))

    async def _why_no_stream(self, js: Any) -> Reason:
        from nats.js import errors as js_errors

        try:
            await asyncio.wait_for(
                js.stream_info(self._settings.nats_stream), _STREAM_CHECK_SECONDS
            )
        except js_errors.NotFoundError as exc:
            if exc.err_code == _STREAM_NOT_FOUND:
                return Reason.NO_STREAM
        except Exception:  # no answer or an error: JetStream cannot say, so not "missing"
            pass
        return Reason.STREAM_UNAVAILABLE

    async def ready(self) -> bool:
        """Connected, and the stream exists (checked at most every few seconds)."""
        try:
            js = await self._connection()
        except PublishError:
            return False
        if not self.connected:
            return False
        if time.monotonic() - self._stream_seen_at < _STREAM_CHECK_TTL:
            return True
        try:
            await js.stream_info(self._settings.nats_stream)
        except Exception:
            return False
        self._stream_seen_at = time.monotonic()
        return True

    async def close(self) -> None:
        """Drain (flush what is in flight) and close; safe to call twice."""
        self._closing = True
        nc, self._nc, self._js = self._nc, None, None
        if nc is not None and not nc.is_closed:
            try:
                await nc.drain()
            except Exception as exc:
                log.warning("nats drain failed: %s", type(exc).__name__)
