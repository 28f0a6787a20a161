"""The new billing work runs as the ``billing`` user on the 3-node cluster rendered from the
shared nats.conf template: project-lifecycle, count-usage and the entitlements function,
with nothing more than the entries added for them (each one is needed here)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

from stripe_bridge.billing.entitlements import CheckRequest, Entitlements, EntitlementSettings
from stripe_bridge.billing.lifecycle_projector import LifecycleProjector
from stripe_bridge.billing.limits import Window, window_start
from stripe_bridge.billing.tiers import DEFAULT_TIERS
from stripe_bridge.billing.usage import UsageRecord, provision_usage_streams, record_usage
from stripe_bridge.billing.usage_counter import UsageCounter
from stripe_bridge.config import Settings
from stripe_bridge.deploy.k8s import NATS_BILLING_USER
from stripe_bridge_testing.natscluster import LocalNatsCluster
from stripe_bridge_testing.waiting import wait_until_async

from ..billing.sequences import CUSTOMER, lifecycle
from ..billing.test_projector import publish_deliveries
from .conftest import ADMIN_TIMEOUT
from .test_auth import as_user, refused
from .test_billing_auth import usage_publisher


def _total(registry: Any, name: str) -> float:
    return float(
        sum(s.value for metric in registry.collect() for s in metric.samples if s.name == name)
    )


async def test_lifecycle_counter_and_checks_as_billing(cluster: LocalNatsCluster) -> None:
    await publish_deliveries(cluster.url(), lifecycle())
    billing, errors = await as_user(cluster, NATS_BILLING_USER)
    stop = asyncio.Event()
    try:
        await provision_usage_streams(billing.jetstream(timeout=ADMIN_TIMEOUT), replicas=3)
        publisher = usage_publisher(cluster)
        try:
            for i in range(5):
                record = UsageRecord(meter="tokens", customer_id=CUSTOMER, value=10, id=f"t-{i}")
                await record_usage(publisher, record)
        finally:
            await publisher.close()
        projector = LifecycleProjector(billing, bucket_replicas=3, batch_size=4)
        counter = UsageCounter(billing, DEFAULT_TIERS, bucket_replicas=3, batch_size=4)
        tasks = [
            asyncio.create_task(projector.run(stop, fetch_wait=0.2)),
            asyncio.create_task(counter.run(stop, fetch_wait=0.2)),
        ]
        published = "stripe_bridge_lifecycle_published_total"
        counted = "stripe_bridge_usage_counted_quantity_total"
        await wait_until_async(
            lambda: (
                _total(projector.metrics.registry, published) >= 3
                and _total(counter.metrics.registry, counted) == 50
            ),
            30,
            "lifecycle published and usage counted as billing",
        )
        password = cluster.passwords[NATS_BILLING_USER]
        settings = Settings(
            nats_url=",".join(cluster.servers()), nats_user="billing", nats_password=password
        )
        logic = Entitlements(DEFAULT_TIERS, settings, EntitlementSettings())
        try:
            check = CheckRequest(customer=CUSTOMER, meter="tokens", quantity=5, reserve=True)
            answer = await logic.check(check)
            # A second non-reserving KV answer within the admission window watches the
            # customer (the watch entries); then memory answers, the hold just made included.
            for _ in range(2):
                await logic.check(CheckRequest(customer=CUSTOMER, meter="tokens"))
            start = window_start(Window.MONTH, datetime.now(UTC))

            def watched() -> bool:
                memory = logic.watched
                if memory is None:
                    return False
                return memory.client.position(CUSTOMER, "tokens", start) is not None

            await wait_until_async(watched, 30, "the customer watched as billing")
            remembered = await logic.check(CheckRequest(customer=CUSTOMER, meter="tokens"))
            failures = logic.watch_metrics.failures
        finally:
            await logic.close()
        assert answer["allowed"] and answer["degraded"] is False
        assert answer["used"] == 50 and answer["reservation_id"]
        assert (remembered["used"], remembered["reserved"]) == (50, 5)
        assert _total(failures, "stripe_bridge_entitlement_watch_failures_total") == 0
        # Still no usage of its own beyond lifecycle events: usage.<meter> is refused.
        assert not errors.seen, errors.seen  # nothing above was refused
        js = billing.jetstream(timeout=2)
        await refused(billing, errors, "usage.tokens", lambda: js.publish("usage.tokens", b"{}"))
        stop.set()
        await asyncio.gather(*tasks)
    finally:
        stop.set()
        await billing.close()
