"""The composition root: the process-wide parts one function (or ``replay``, ``dev``) runs on.

Settings, metrics, the idempotency store, the NATS publisher and the metrics pusher are
built here once per process and handed to ``ingest`` and the HTTP shell; nothing else
constructs them.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from .config import Settings
from .idempotency import IdempotencyStore, make_store
from .jetstream import JetStreamPublisher
from .metrics import BridgeMetrics, served_event_types
from .push import MetricsPusher


class Runtime:
    """Process-wide parts: settings, metrics, idempotency store, NATS publisher, pusher.

    Nothing connects at construction; the NATS connection opens on first use.
    """

    def __init__(
        self,
        settings: Settings,
        function_name: str,
        metrics: BridgeMetrics | None = None,
        store: IdempotencyStore | None = None,
    ) -> None:
        self.settings = settings
        self.function_name = settings.function_name or function_name
        self.metrics = metrics or BridgeMetrics()
        self.store = store or make_store(settings)
        # Named after the function, so that the server's connz tells the functions apart.
        named = settings.model_copy(update={"function_name": self.function_name})
        self.publisher = JetStreamPublisher(named, self.metrics.set_nats_connected)
        self.metrics.preinitialise(served_event_types(function_name), self.store.backend)
        self.pusher = MetricsPusher.for_function(
            settings, self.metrics.registry, self.function_name, self.metrics.push_failures
        )

    @property
    def collectors(self) -> CollectorRegistry:
        """The Prometheus collectors ``/metrics`` exposes."""
        return self.metrics.registry

    async def ready(self) -> bool:
        """NATS is connected and the stream exists (``/readyz``)."""
        return await self.publisher.ready()

    async def close(self) -> None:
        """Drain NATS, push metrics a last time, close the store (SIGTERM path)."""
        await self.publisher.close()
        if self.pusher is not None:
            await self.pusher.final_push()
        await self.store.close()
