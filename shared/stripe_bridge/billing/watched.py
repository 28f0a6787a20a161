"""The customers the entitlements function keeps in memory, least recently used out.

A customer's first check reads KV and starts watching it in the background with the
in-process client's machinery (``EntitlementsClient.serve``: its tier, counts and ledgers
by KV watches); once caught up, its non-reserving checks and its view are answered from
memory while the client says memory is current (``EntitlementsClient.position``). At most
``ENTITLEMENTS_WATCHED_CUSTOMERS`` are watched (six ordered consumers each on nats-server):
watching one more forgets the least recently answered (its watches stop). A customer is
watched only on its second KV answer within ``ADMIT_WITHIN`` seconds: watches cost
nats-server consumers and heartbeats, which one-off ids (and a caller trying random ids)
must not buy.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from typing import Any

from cachetools import LRUCache
from prometheus_client import Counter, Gauge
from stripe_bridge_entitlements.client import EntitlementsClient
from stripe_bridge_entitlements.reservations import CountView, Ledger

log = logging.getLogger(__name__)

#: Seconds without starting new watches after one failed (a NATS user without the watch
#: permissions would otherwise try again on every check).
RETRY_AFTER = 5.0
#: Seconds within which a customer's second KV answer starts its watch (an active
#: customer checks again within it; a one-off id never costs six consumers).
ADMIT_WITHIN = 60.0
#: Customers answered once remembered, per watched place (a flood of one-off ids pushes
#: out the oldest, never memory).
SEEN_PER_PLACE = 4


class WatchMetrics:
    """What memory answers and what watching costs; registered in the function's registry."""

    def __init__(self) -> None:
        self.answers = Counter(
            "stripe_bridge_entitlement_answers",
            "Non-reserving checks and views by where they were answered from: memory "
            "(watched customers) or kv (read, then watched).",
            ["source"],
            registry=None,
        )
        self.watched = Gauge(
            "stripe_bridge_entitlement_watched_customers",
            "Customers the entitlements function keeps in memory by KV watches.",
            registry=None,
        )
        self.evictions = Counter(
            "stripe_bridge_entitlement_watch_evictions",
            "Customers forgotten to keep ENTITLEMENTS_WATCHED_CUSTOMERS.",
            registry=None,
        )
        self.failures = Counter(
            "stripe_bridge_entitlement_watch_failures",
            "Customers whose watches could not be started or ended on their own "
            "(their checks read KV meanwhile).",
            registry=None,
        )

    def answered(self, from_memory: bool) -> None:
        """Count one non-reserving check or view by where it was answered from."""
        self.answers.labels("memory" if from_memory else "kv").inc()

    def collectors(self) -> list[Any]:
        """Every metric, to register in a registry."""
        return [self.answers, self.watched, self.evictions, self.failures]


class WatchedCustomers:
    """Customers kept in memory by ``client``, at most ``size``, least recently used out."""

    def __init__(self, client: EntitlementsClient, size: int, metrics: WatchMetrics) -> None:
        self.client = client
        self.size = size
        self.metrics = metrics
        #: Watched (or being watched) customers, least recently answered first.
        self._recent: OrderedDict[str, None] = OrderedDict()
        self._starting: dict[str, asyncio.Task[None]] = {}
        #: Customers answered from KV once and not watched: when.
        self._seen: LRUCache[str, float] = LRUCache(size * SEEN_PER_PLACE)
        self._quiet_until = float("-inf")

    def position(
        self, customer: str, meter: str, start: int
    ) -> tuple[str | None, CountView, Ledger] | None:
        """Memory's tier name, count and ledger (``EntitlementsClient.position``), or None
        when memory cannot answer for ``customer`` now (then read KV and ``watch``)."""
        found = self.client.position(customer, meter, start)
        if found is not None:
            self._recent.move_to_end(customer)
        return found

    def watch(self, customer: str) -> None:
        """``customer`` was answered from KV: start watching it in the background if this
        is its second such answer within ``ADMIT_WITHIN`` s, unless it is watched already
        or being watched; a customer whose watch ended is watched again."""
        now = time.monotonic()
        if customer in self._starting or now < self._quiet_until:
            return
        if customer in self._recent:
            if not self.client.broken(customer):
                return
            self.metrics.failures.inc()
            log.warning("a customer's KV watch ended: watching it again")
        elif not self._admitted(customer, now):
            return
        self._starting[customer] = asyncio.create_task(self._serve(customer))

    def _admitted(self, customer: str, now: float) -> bool:
        """Whether ``customer``, answered from KV now, was answered within ADMIT_WITHIN s
        before; otherwise remember this answer (boundedly)."""
        seen = self._seen.pop(customer, None)
        if seen is not None and now - seen <= ADMIT_WITHIN:
            return True
        self._seen[customer] = now
        return False

    async def _serve(self, customer: str) -> None:
        try:
            self._recent.pop(customer, None)
            await self.client.forget(customer)  # what is left of a watch that ended
            while len(self._recent) >= self.size:
                oldest = next(iter(self._recent))
                del self._recent[oldest]
                await self.client.forget(oldest)
                self.metrics.evictions.inc()
            self._recent[customer] = None
            self.metrics.watched.set(len(self._recent))
            await self.client.serve(customer)
        except Exception as exc:
            # Its checks keep reading KV; NATS trouble is the KV path's to answer for.
            self._recent.pop(customer, None)
            self._quiet_until = time.monotonic() + RETRY_AFTER
            self.metrics.failures.inc()
            log.warning("watching a customer failed (%s): its checks read KV", type(exc).__name__)
        finally:
            del self._starting[customer]
            self.metrics.watched.set(len(self._recent))

    async def close(self) -> None:
        """Stop starting watches, stop every watch and close the client's connection."""
        for task in self._starting.values():
            task.cancel()
        await asyncio.gather(*self._starting.values(), return_exceptions=True)
        await self.client.close()
