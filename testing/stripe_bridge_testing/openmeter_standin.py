"""A local stand-in of OpenMeter's ingest endpoint, for tests, benchmarks and development.

It answers as OpenMeter's published contract says, from openmeterio/openmeter at commit
7e57a394a0283fb210a644685ad1d257f6d5c85c:

- ``api/openapi.cloud.yaml`` line 4333 (self-hosted ``api/openapi.yaml`` line 4335 says the
  same), operation ``ingestEvents`` (``POST /api/v1/events``):
  responses 204, 400, 401, 403, 412, 500, 503 and a default (lines 4337-4375), every error
  ``application/problem+json`` (``UnexpectedProblemResponse``, line 25164: type, title,
  status, detail, instance); request bodies (lines 4383-4396) ``application/cloudevents+json``
  (one Event), ``application/cloudevents-batch+json`` (an array) or ``application/json``
  (either);
- the ``Event`` schema (line 17299): ``id``, ``source``, ``specversion``, ``type``,
  ``subject`` required non-empty strings; ``source`` a URI-reference (line 17316);
  ``datacontenttype`` null or ``application/json``; ``dataschema`` null or a URI; ``time``
  null or an RFC 3339 date-time; ``data`` null or an object;
- ``openmeter/ingest/httpdriver/ingest.go`` lines 35-89: the Content-Type header is
  compared whole (``application/json; charset=utf-8`` is a 400) and the body decoded
  before anything is ingested, so one invalid event refuses the whole request (400);
- ``openmeter/ingest/service.go`` lines 58-67: valid events are then ingested **one at a
  time**; a failure mid-batch answers 500 after the events before it were ingested
  (``fail_midway``). Nothing is rolled back;
- ``app/config/dedupe.go`` line 204 (``dedupe.enabled`` defaults to false) and
  ``openmeter/ingest/dedupe.go``: self-hosted OpenMeter meters every ingested event unless
  dedupe is enabled; with it, an event whose (id, source) was seen is dropped silently
  (still 204). ``dedupe`` chooses; ``metered`` is what OpenMeter's meters would count.

Statuses outside the spec are scripted only for what sits in front of OpenMeter (an
ingress or API gateway): 413 and 429 (``PROXY_STATUSES``); anything else is refused.

``rate_limit`` (requests per second) is OpenMeter Cloud's ingest rate limit as
https://openmeter.io/docs/cloud/api/rate-limiting describes it: requests over the limit
answer 429 with ``Retry-After`` (seconds to wait; the ``X-RateLimit-*`` headers are not
sent: nothing here reads them); the limit itself is "according to pricing", so it is the
caller's to choose. It is a token bucket
holding one second of requests; a request that comes back before the Retry-After it was
given is refused again and counted (``early_retries``: a client that ignores Retry-After).

Faults are scripted: ``fail_next`` (e.g. 429 with Retry-After), ``outage`` (every request
fails until a deadline), ``fail_midway`` (ingest some events, then fail) and
``hold_next`` (accept a batch, then stall before answering, to let a test crash the client
between OpenMeter's accept and the client's ack).
"""

from __future__ import annotations

import json
import math
import re
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler
from typing import Any

from stripe_bridge.billing.uri import is_uri_reference

from .standin import HttpStandIn, StandInHandler

INGEST_PATH = "/api/v1/events"
_REQUIRED = ("id", "source", "specversion", "type", "subject")
#: The error statuses ``ingestEvents`` documents.
DOCUMENTED_STATUSES = frozenset({400, 401, 403, 412, 500, 503})
#: Statuses a proxy in front of OpenMeter answers (body too large, rate limited).
PROXY_STATUSES = frozenset({413, 429})
SINGLE = "application/cloudevents+json"
BATCH = "application/cloudevents-batch+json"
PLAIN = "application/json"
_RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:[Zz]|[+-]\d{2}:\d{2})")
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+\-.]*:")


@dataclass(frozen=True)
class Fault:
    """One scripted failure answer, after ingesting ``after`` events of the request."""

    status: int
    retry_after: str | None = None
    after: int = 0

    def __post_init__(self) -> None:
        if self.status not in DOCUMENTED_STATUSES | PROXY_STATUSES:
            raise ValueError(f"OpenMeter's ingest API does not answer {self.status}")


class RateLimit:
    """A token bucket of ``per_second`` requests, holding one second's worth."""

    def __init__(self, per_second: float, clock: Callable[[], float] = time.monotonic) -> None:
        if per_second <= 0:
            raise ValueError("rate_limit must be positive")
        self.per_second = per_second
        self.capacity = max(1.0, per_second)
        self._clock = clock
        self._tokens = self.capacity
        self._at = clock()
        self._not_before = 0.0
        self.early_retries = 0

    def take(self) -> int | None:
        """None if the request may pass, else the whole seconds it must wait (Retry-After).

        Not thread-safe: the caller holds the stand-in's lock.
        """
        now = self._clock()
        self._tokens = min(self.capacity, self._tokens + (now - self._at) * self.per_second)
        self._at = now
        if now < self._not_before:
            self.early_retries += 1
        elif self._tokens >= 1:
            self._tokens -= 1
            return None
        wait = max(1, math.ceil((1 - self._tokens) / self.per_second))
        self._not_before = max(self._not_before, now + wait)
        return wait


@dataclass(frozen=True)
class RequestLog:
    """One request as the stand-in saw it."""

    at: float
    status: int
    events: int


def _date_time(value: Any) -> bool:
    if not isinstance(value, str) or not _RFC3339.fullmatch(value):
        return False
    try:
        datetime.fromisoformat(value.upper().replace("Z", "+00:00"))
    except ValueError:  # well-formed, impossible: month 13, February 30...
        return False
    return True


def validate_event(event: Any) -> str | None:
    """Why ``event`` breaks OpenMeter's Event schema, or None if it is valid."""
    if not isinstance(event, dict):
        return "event must be a JSON object"
    for name in _REQUIRED:
        value = event.get(name)
        if not isinstance(value, str) or not value:
            return f"{name} must be a non-empty string"
    # The schema's x-go-type is sdk-go's event.Event, which this project feeds 1.0 only.
    if event["specversion"] != "1.0":
        return "specversion must be 1.0"
    if not is_uri_reference(event["source"]):
        return "source must be a URI-reference"
    if event.get("datacontenttype") not in (None, PLAIN):
        return "datacontenttype must be application/json"
    schema = event.get("dataschema")
    if schema is not None and not (
        isinstance(schema, str) and _SCHEME.match(schema) and is_uri_reference(schema)
    ):
        return "dataschema must be a URI"
    when = event.get("time")
    if when is not None and not _date_time(when):
        return "time must be an RFC 3339 date-time"
    data = event.get("data")
    if data is not None and not isinstance(data, dict):
        return "data must be a JSON object"
    return None


def events_of(content_type: str, payload: Any) -> list[Any] | None:
    """The events a body of ``content_type`` carries, or None if the type or shape is wrong."""
    if content_type == SINGLE and isinstance(payload, dict):
        return [payload]
    if content_type == BATCH and isinstance(payload, list):
        return payload
    if content_type == PLAIN and isinstance(payload, dict | list) and payload:
        return [payload] if isinstance(payload, dict) else payload
    return None


class IngestStandIn(HttpStandIn):
    """The stand-in server, run in a background thread on a free loopback port.

    ``accepted`` lists every event ingested, repeats included (deliveries), and ``events``
    the same events whole (their ``data``: what meters group by); ``metered``
    counts what OpenMeter's meters would see: the same without ``dedupe``, each
    (id, source) once with it.
    """

    def __init__(
        self,
        api_key: str = "om_test_key",
        port: int | None = None,
        host: str = "127.0.0.1",
        dedupe: bool = False,
        rate_limit: float | None = None,
    ) -> None:
        super().__init__(port, host)
        self.api_key = api_key
        self.dedupe = dedupe
        self.rate_limit = RateLimit(rate_limit) if rate_limit is not None else None
        self.accepted: list[tuple[str, str]] = []
        self.events: list[dict[str, Any]] = []
        #: (id, source) -> wall-clock time it was first ingested (end-to-end delays).
        self.first_ingested: dict[tuple[str, str], float] = {}
        self.requests: list[RequestLog] = []
        self.held = threading.Event()
        #: The events of the request ``hold_next`` stalled (accepted, not yet answered).
        self.held_events: list[tuple[str, str]] = []
        self._lock = threading.Lock()
        self._faults: deque[Fault] = deque()
        self._outage_until = 0.0
        self._outage_status = 503
        self._hold_armed = False
        self._hold_skip = 0
        self._release = threading.Event()

    def fail_next(self, count: int, status: int, retry_after: str | None = None) -> None:
        """Answer the next ``count`` requests with ``status`` (and Retry-After)."""
        faults = [Fault(status, retry_after) for _ in range(count)]
        with self._lock:
            self._faults.extend(faults)

    def fail_midway(self, after: int, status: int = 500) -> None:
        """Ingest the first ``after`` events of the next request, then answer ``status``.

        What OpenMeter does when its collector fails on one event of a batch. If that
        request is invalid, its 400 comes first (nothing is ingested) and the fault is spent.
        """
        fault = Fault(status, after=after)
        with self._lock:
            self._faults.append(fault)

    def outage(self, seconds: float, status: int = 503) -> None:
        """Fail every request with ``status`` for the next ``seconds``."""
        Fault(status)  # refuse a status OpenMeter never answers now, not in a request
        with self._lock:
            self._outage_until = time.monotonic() + seconds
            self._outage_status = status

    def hold_next(self, skip: int = 0) -> None:
        """After ``skip`` accepted requests, accept one more, then stall until ``release``.

        The stall lasts at most 60 s.
        """
        with self._lock:
            self._hold_armed = True
            self._hold_skip = skip
            self._release.clear()
            self.held.clear()

    def release(self) -> None:
        """Let a held request answer."""
        self._release.set()

    def counts(self) -> Counter[tuple[str, str]]:
        """How many times each (id, source) was ingested (delivered)."""
        with self._lock:
            return Counter(self.accepted)

    def metered(self) -> Counter[tuple[str, str]]:
        """How many times OpenMeter's meters count each (id, source), given ``dedupe``."""
        counts = self.counts()
        return Counter(dict.fromkeys(counts, 1)) if self.dedupe else counts

    def _throttle(self) -> int | None:
        """Seconds of Retry-After if ``rate_limit`` refuses this request, else None."""
        if self.rate_limit is None:
            return None
        with self._lock:
            return self.rate_limit.take()

    def _next_fault(self) -> Fault | None:
        with self._lock:
            if self._faults:
                return self._faults.popleft()
            if time.monotonic() < self._outage_until:
                return Fault(self._outage_status)
        return None

    def _ingest(self, content_type: str, body: bytes, fault: Fault | None) -> tuple[int, str, int]:
        """Decode and validate the whole request, then ingest its events one at a time.

        (status, problem detail, events ingested).
        """
        try:
            payload = json.loads(body)
        except ValueError:
            return 400, "invalid event: request body is not JSON", 0
        if content_type not in (SINGLE, BATCH, PLAIN):
            return 400, f"invalid content type: {content_type}", 0
        events = events_of(content_type, payload)
        if events is None:
            return 400, "invalid event: no events found", 0
        for index, event in enumerate(events):
            problem = validate_event(event)
            if problem:
                return 400, f"invalid event: event {index}: {problem}", 0
        if fault is not None:
            del events[fault.after :]
        hold = False
        now = time.time()
        with self._lock:
            keys = [(e["id"], e["source"]) for e in events]
            self.accepted.extend(keys)
            self.events.extend(events)
            for key in keys:
                self.first_ingested.setdefault(key, now)
            if fault is None and self._hold_armed and self._hold_skip > 0:
                self._hold_skip -= 1
            elif fault is None and self._hold_armed:
                hold, self._hold_armed = True, False
        if fault is not None:
            return fault.status, "forwarding event to collector: scripted fault", len(events)
        if hold:
            self.held_events = [(e["id"], e["source"]) for e in events]
            self.held.set()
            self._release.wait(60)
        return 204, "", len(events)

    def handler(self) -> type[BaseHTTPRequestHandler]:
        """OpenMeter's ingest endpoint."""
        standin = self

        class Handler(StandInHandler):
            def _problem(self, status: int, detail: str, retry_after: str | None = None) -> None:
                body = {"type": "about:blank", "title": HTTPStatus(status).phrase,
                        "status": status, "detail": detail,
                        "instance": "urn:request:standin"}  # fmt: skip
                headers = {"Retry-After": retry_after} if retry_after is not None else None
                self.send(status, body, "application/problem+json", headers)

            def do_POST(self) -> None:
                body = self.read_body()
                status, events = self._answer(body)
                with standin._lock:
                    standin.requests.append(RequestLog(time.monotonic(), status, events))

            def _answer(self, body: bytes) -> tuple[int, int]:
                if self.path != INGEST_PATH:
                    self._problem(404, "not found")
                    return 404, 0
                if self.headers.get("Authorization") != f"Bearer {standin.api_key}":
                    self._problem(401, "invalid API key")
                    return 401, 0
                wait = standin._throttle()
                if wait is not None:
                    self._problem(429, "rate limit exceeded", str(wait))
                    return 429, 0
                fault = standin._next_fault()
                if fault is not None and not fault.after:
                    self._problem(fault.status, "scripted fault", fault.retry_after)
                    return fault.status, 0
                content_type = self.headers.get("Content-Type") or ""
                status, detail, events = standin._ingest(content_type, body, fault)
                if status == 204:
                    self.send(204)
                else:
                    self._problem(status, detail)
                return status, events

        return Handler

    def stop(self) -> None:
        """Release held requests and stop serving."""
        self._release.set()
        super().stop()
