"""Push metrics to a Prometheus Pushgateway: scale-to-zero pods cannot be scraped reliably.

Grouping key: ``job="stripe-bridge"``, ``environment`` (when set: staging and production may
share a Pushgateway, and alerts aggregate ``by (environment)``), ``function`` and ``instance``
(pod name, pid, random per start). Each process owns its group and replaces it whole (HTTP PUT)
with its full registry, so replicas never overwrite each other's counters and ``sum by
(environment, function) (rate(...))`` adds them up the way it would for scraped pods. Groups
are kept when a process exits (its final values stay, so no increment is lost and ``rate()``
sees a flat counter) and removed later by ``stripe-bridge pushgateway-gc`` once their
``push_time_seconds`` is old. docs/observability.md argues the choice.

Pushing never touches a webhook's response: ``request_done`` only wakes a background task;
the HTTP call runs in a worker thread with a timeout, at most once per ``min_interval``, and
every failure is counted and logged, never raised.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    delete_from_gateway,
    generate_latest,
)

from .config import Settings
from .errors import StripeBridgeError
from .exitcodes import ExitCode
from .redact import redact_url

log = logging.getLogger(__name__)

JOB = "stripe-bridge"
#: Per-phase timeout (connect, send, answer) of one push.
PUSH_TIMEOUT_SECONDS = 2.0
#: A live but idle process still pushes this often, so that a fresh ``push_time_seconds``
#: means "alive" and the garbage collector never removes a running instance's group.
HEARTBEAT_SECONDS = 60.0


def group_url(gateway: str, labels: Mapping[str, str]) -> str:
    """The URL of the Pushgateway group with these labels (``job`` and the grouping key).

    Escaped by prometheus_client itself (base64 for an empty value or one with ``/``, the
    Pushgateway's rule): it builds the URL only inside ``push_to_gateway`` and
    ``delete_from_gateway``, whose documented ``handler`` hook receives it, so it is taken
    from a DELETE handed to a handler that never sends it.
    """
    urls: list[str] = []

    def capture(url: str, **_: object) -> Callable[[], None]:
        urls.append(url)
        return lambda: None

    grouping_key = {name: value for name, value in labels.items() if name != "job"}
    delete_from_gateway(gateway, job=labels["job"], grouping_key=grouping_key, handler=capture)
    return urls[0]


class MetricsPusher:
    """Pushes one registry to its own Pushgateway group, at most every ``min_interval`` s."""

    def __init__(
        self,
        url: str,
        registry: CollectorRegistry,
        function: str,
        instance: str,
        min_interval: float = 15.0,
        timeout: float = PUSH_TIMEOUT_SECONDS,
        failures: Counter | None = None,
        environment: str | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self.registry = registry
        # The Pushgateway adds the grouping key's labels to every pushed series.
        environments = {"environment": environment} if environment else {}
        self.grouping_key = {"job": JOB, **environments, "function": function, "instance": instance}
        self.endpoint = group_url(self.url, self.grouping_key)
        self.min_interval = min_interval
        self.timeout = timeout
        self.heartbeat = max(HEARTBEAT_SECONDS, min_interval)
        self.failures = failures
        self.pushes = 0
        self.failed = 0
        # The zero state, taken before any delivery: pushed first, so that Prometheus can see
        # every counter at 0 before its first increment (see docs/observability.md).
        self._initial: bytes | None = generate_latest(registry)
        self._lock = threading.Lock()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @classmethod
    def for_function(
        cls,
        settings: Settings,
        registry: CollectorRegistry,
        function: str,
        failures: Counter | None = None,
    ) -> MetricsPusher | None:
        """The pusher of one function's ``registry`` as configured, or None without
        ``PUSHGATEWAY_URL`` (then only ``/metrics`` shows the metrics)."""
        if not settings.pushgateway_url:
            return None
        return cls(
            settings.pushgateway_url,
            registry,
            function=function,
            instance=settings.instance(),
            environment=settings.environment,
            min_interval=settings.pushgateway_min_interval,
            failures=failures,
        )

    def _push(self, body: bytes | None) -> None:
        # Imported on the first push, in the pusher's thread: httpx and what it brings take
        # ~50-200 ms to import, which a function's cold start must not wait for.
        import httpx

        # The lock orders pushes, so the one that runs last carries the newest values.
        with self._lock:
            payload = generate_latest(self.registry) if body is None else body
            try:
                response = httpx.put(
                    self.endpoint,
                    content=payload,
                    headers={"Content-Type": CONTENT_TYPE_LATEST},
                    timeout=self.timeout,
                )
                response.raise_for_status()
                self.pushes += 1
                return
            except httpx.TimeoutException:
                reason = "timeout"
            except httpx.HTTPStatusError:
                reason = "rejected"
            except Exception:  # a Pushgateway outage must never fail a webhook
                reason = "unreachable"
            self.failed += 1
            if self.failures is not None:
                self.failures.labels(reason).inc()
            log.warning("metrics push failed reason=%s url=%s", reason, redact_url(self.url))

    async def _run(self) -> None:
        body, self._initial = self._initial, None
        await asyncio.to_thread(self._push, body)
        while True:
            # Sleeping first bounds the rate; the wake-up (or heartbeat) then triggers a push.
            await asyncio.sleep(self.min_interval)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.heartbeat - self.min_interval)
            self._wake.clear()
            await asyncio.to_thread(self._push, None)

    def request_done(self) -> None:
        """Note that metrics changed; the background task pushes them soon. Never blocks."""
        self._wake.set()
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def final_push(self) -> None:
        """Push the final values now (SIGTERM path); waits at most for one running push."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await asyncio.to_thread(self._push, None)


@dataclass(frozen=True)
class Group:
    """One Pushgateway group: its labels (``job`` and grouping key) and last push time."""

    labels: dict[str, str]
    push_time: float


class PushgatewayError(StripeBridgeError):
    """The Pushgateway could not be reached or answered with an error."""

    exit_code = ExitCode.UNAVAILABLE


def list_groups(url: str, timeout: float = 10.0) -> list[Group]:
    """Every group on the Pushgateway at ``url`` (its ``/api/v1/metrics``)."""
    import httpx

    try:
        response = httpx.get(f"{url.rstrip('/')}/api/v1/metrics", timeout=timeout)
        response.raise_for_status()
        data = response.json()["data"]
    except (httpx.HTTPError, ValueError, KeyError) as exc:
        raise PushgatewayError(f"cannot list groups: {type(exc).__name__}") from None
    groups = []
    for entry in data:
        samples = entry.get("push_time_seconds", {}).get("metrics", [])
        push_time = float(samples[0]["value"]) if samples else 0.0
        groups.append(Group(dict(entry["labels"]), push_time))
    return groups


def stale_groups(
    url: str, older_than: float, environment: str | None = None, now: float | None = None
) -> list[Group]:
    """This bridge's groups whose last successful push is more than ``older_than`` s old.

    With ``environment``, only that environment's groups: staging and production share a
    Pushgateway, and each environment's clean-up must leave the other's groups alone.
    """
    cutoff = (time.time() if now is None else now) - older_than
    return [
        g
        for g in list_groups(url)
        if g.labels.get("job") == JOB
        and g.push_time < cutoff
        and (environment is None or g.labels.get("environment") == environment)
    ]


def delete_group(url: str, group: Group, timeout: float = 10.0) -> None:
    """Delete one group from the Pushgateway."""
    import httpx

    try:
        response = httpx.delete(group_url(url, group.labels), timeout=timeout)
        response.raise_for_status()
    except httpx.HTTPError as exc:
        raise PushgatewayError(f"cannot delete group: {type(exc).__name__}") from None
