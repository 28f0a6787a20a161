"""A local stand-in of OpenMeter's ingest endpoint, for tests, benchmarks and development.

It follows the documented contract of ``POST /api/v1/events`` (operation ``ingestEvents``):
Bearer authentication, ``application/cloudevents+json`` (one event) or
``application/cloudevents-batch+json`` (an array), the Event schema's required fields, 204
on success and RFC 7807 ``application/problem+json`` errors. A batch with one invalid event
is refused whole. Like OpenMeter's ingest API it deduplicates nothing at request time: it
records every accepted event, so callers can count deliveries per (id, source).

Faults are scripted: ``fail_next`` (e.g. 429 with Retry-After), ``outage`` (every request
fails until a deadline) and ``hold_next`` (accept a batch, then stall before answering, to
let a test crash the client between OpenMeter's accept and the client's ack).
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass
from datetime import datetime
from http.server import BaseHTTPRequestHandler
from typing import Any

from .standin import HttpStandIn, StandInHandler

INGEST_PATH = "/api/v1/events"
_REQUIRED = ("id", "source", "specversion", "type", "subject")


@dataclass(frozen=True)
class Fault:
    """One scripted failure answer."""

    status: int
    retry_after: str | None = None


@dataclass(frozen=True)
class RequestLog:
    """One request as the stand-in saw it."""

    at: float
    status: int
    events: int


def validate_event(event: Any) -> str | None:
    """Why ``event`` breaks OpenMeter's Event schema, or None if it is valid."""
    if not isinstance(event, dict):
        return "event must be a JSON object"
    for name in _REQUIRED:
        value = event.get(name)
        if not isinstance(value, str) or not value:
            return f"{name} must be a non-empty string"
    if event["specversion"] != "1.0":
        return "specversion must be 1.0"
    when = event.get("time")
    if when is not None:
        try:
            datetime.fromisoformat(str(when).replace("Z", "+00:00"))
        except ValueError:
            return "time must be RFC 3339"
    data = event.get("data")
    if data is not None and not isinstance(data, dict):
        return "data must be a JSON object"
    return None


class IngestStandIn(HttpStandIn):
    """The stand-in server, run in a background thread on a free loopback port."""

    def __init__(
        self, api_key: str = "om_test_key", port: int | None = None, host: str = "127.0.0.1"
    ) -> None:
        super().__init__(port, host)
        self.api_key = api_key
        self.accepted: list[tuple[str, str]] = []
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
        with self._lock:
            self._faults.extend(Fault(status, retry_after) for _ in range(count))

    def outage(self, seconds: float, status: int = 503) -> None:
        """Fail every request with ``status`` for the next ``seconds``."""
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
        """How many times each (id, source) was accepted."""
        with self._lock:
            return Counter(self.accepted)

    def _next_fault(self) -> Fault | None:
        with self._lock:
            if self._faults:
                return self._faults.popleft()
            if time.monotonic() < self._outage_until:
                return Fault(self._outage_status)
        return None

    def _ingest(self, content_type: str, body: bytes) -> tuple[int, str, int]:
        """Store a valid request's events; (status, problem detail, event count)."""
        try:
            payload = json.loads(body)
        except ValueError:
            return 400, "request body is not JSON", 0
        if content_type == "application/cloudevents+json":
            events = [payload]
        elif content_type == "application/cloudevents-batch+json" and isinstance(payload, list):
            events = payload
        else:
            return 400, f"unsupported content type or body shape: {content_type}", 0
        for index, event in enumerate(events):
            problem = validate_event(event)
            if problem:
                return 400, f"event {index}: {problem}", len(events)
        hold = False
        with self._lock:
            self.accepted.extend((e["id"], e["source"]) for e in events)
            if self._hold_armed and self._hold_skip > 0:
                self._hold_skip -= 1
            elif self._hold_armed:
                hold, self._hold_armed = True, False
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
                body = {"type": "about:blank", "title": str(status), "status": status,
                        "detail": detail, "instance": "urn:request:standin"}  # fmt: skip
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
                fault = standin._next_fault()
                if fault is not None:
                    self._problem(fault.status, "scripted fault", fault.retry_after)
                    return fault.status, 0
                content_type = (self.headers.get("Content-Type") or "").split(";")[0].strip()
                status, detail, events = standin._ingest(content_type, body)
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
