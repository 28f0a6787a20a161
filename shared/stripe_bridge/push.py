"""Push metrics to a Prometheus Pushgateway: scale-to-zero pods cannot be scraped reliably.

Grouping key: ``job="stripe-bridge"``, ``function``, ``instance`` (pod name + pid), so
replicas never overwrite each other's counters and ``sum by (function)`` stays correct.
Pushes are rate-limited, run in a worker thread off the response path, and never raise
into a webhook. See docs/observability.md for how stale groups are cleaned up.
"""

from __future__ import annotations

import asyncio
import logging
import time

from prometheus_client import CollectorRegistry, pushadd_to_gateway

log = logging.getLogger(__name__)

JOB = "stripe-bridge"


class MetricsPusher:
    """Pushes one registry to one Pushgateway group, at most every ``min_interval`` s."""

    def __init__(
        self,
        url: str,
        registry: CollectorRegistry,
        function: str,
        instance: str,
        min_interval: float = 5.0,
        timeout: float = 2.0,
    ) -> None:
        self.url = url
        self.registry = registry
        self.grouping_key = {"function": function, "instance": instance}
        self.min_interval = min_interval
        self.timeout = timeout
        self.pushes = 0
        self.failures = 0
        self._last = float("-inf")
        self._task: asyncio.Task[None] | None = None
        self._dirty = False

    def _push_now(self) -> None:
        try:
            pushadd_to_gateway(
                self.url,
                job=JOB,
                registry=self.registry,
                grouping_key=self.grouping_key,
                timeout=self.timeout,
            )
            self.pushes += 1
        except Exception as exc:  # a Pushgateway outage must never fail a webhook
            self.failures += 1
            log.warning("metrics push failed: %s", type(exc).__name__)

    async def _run(self) -> None:
        # Loop so that requests handled while a push was running are pushed too.
        while self._dirty:
            self._dirty = False
            wait = self._last + self.min_interval - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            self._last = time.monotonic()
            await asyncio.to_thread(self._push_now)

    def request_done(self) -> None:
        """Note that metrics changed; schedule a push unless one is pending."""
        self._dirty = True
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def final_push(self) -> None:
        """Push once more, now, on shutdown (after waiting for a running push)."""
        if self._task is not None and not self._task.done():
            self._task.cancel()
        await asyncio.to_thread(self._push_now)
