"""The NATS users the billing deployments log in as can do exactly what they need.

knative/<env>/consumers.yaml runs forward-openmeter and project-tiers as ``billing``;
knative/<env>/billing-usage.yaml runs the usage function as ``usage``. Here the real
code paths (provisioning, pull consumers, acks, dead letters, KV compare-and-set, the
usage publish) run as those users against the 3-node cluster rendered from the shared
nats.conf template, and what they must not do is refused by the servers.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from stripe_bridge.billing.openmeter import Forwarder, ForwarderSettings
from stripe_bridge.billing.projector import TierProjector, read_state, tiers_bucket
from stripe_bridge.billing.tiers import TIERS_BUCKET
from stripe_bridge.billing.usage import UsageRecord, provision_usage_streams, record_usage
from stripe_bridge.config import Settings
from stripe_bridge.deploy.k8s import NATS_BILLING_USER, NATS_USAGE_USER, NATS_USER
from stripe_bridge.jetstream import JetStreamPublisher
from stripe_bridge.streams import USAGE_DLQ as DEAD_LETTER_STREAM
from stripe_bridge.streams import USAGE_STREAM
from stripe_bridge_testing.natscluster import LocalNatsCluster
from stripe_bridge_testing.openmeter_standin import IngestStandIn
from stripe_bridge_testing.waiting import wait_until_async

from ..billing.sequences import CONFIG, CUSTOMER, lifecycle
from ..billing.test_projector import publish_deliveries
from ..billing.test_tiers import fold
from .conftest import ADMIN_TIMEOUT, STREAM, connect
from .test_auth import as_user, refused

KV_STREAM = f"KV_{TIERS_BUCKET}"
LAG = "stripe_bridge_openmeter_consumer_lag"
DEAD_LETTERED = "stripe_bridge_openmeter_events_dead_lettered_total"


def usage_publisher(cluster: LocalNatsCluster) -> JetStreamPublisher:
    """What the usage function builds: the bridge's publisher bound to USAGE, as usage."""
    settings = Settings(
        nats_url=",".join(cluster.servers()),
        nats_user=NATS_USAGE_USER,
        nats_password=cluster.passwords[NATS_USAGE_USER],
        nats_stream=USAGE_STREAM,
    )
    return JetStreamPublisher(settings)


async def test_forwarder_as_billing_provisions_forwards_acks_and_dead_letters(
    cluster: LocalNatsCluster,
) -> None:
    billing, errors = await as_user(cluster, NATS_BILLING_USER)
    try:
        # forward-openmeter at start: first with the default R1, then restarted with
        # --replicas 3 as the production Deployment runs it (a stream update).
        js = billing.jetstream(timeout=ADMIN_TIMEOUT)
        created = await provision_usage_streams(js)
        assert created == {USAGE_STREAM: "created", DEAD_LETTER_STREAM: "created"}
        updated = await provision_usage_streams(js, replicas=3)
        assert updated == {USAGE_STREAM: "updated", DEAD_LETTER_STREAM: "updated"}

        async def three_current_replicas() -> bool:
            cluster_info = (await js.stream_info(USAGE_STREAM)).cluster
            peers = (cluster_info.replicas or []) if cluster_info else []
            return bool(cluster_info and cluster_info.leader) and (
                len(peers) == 2 and all(peer.current for peer in peers)
            )

        await wait_until_async(three_current_replicas, 20, "USAGE on three servers")

        publisher = usage_publisher(cluster)
        try:
            for i in range(30):
                record = UsageRecord(meter="tokens", customer_id="cus_1", value=i, id=f"u-{i}")
                ack = await record_usage(publisher, record)
                assert not ack.duplicate
        finally:
            await publisher.close()
        producer, _ = await as_user(cluster, NATS_USAGE_USER)
        try:
            # A producer bypassing UsageRecord: OpenMeter refuses it, it is dead-lettered.
            await producer.jetstream().publish(
                "usage.tokens", b'{"specversion": "1.0"}', headers={"Nats-Msg-Id": "bad-1"}
            )
        finally:
            await producer.close()

        with IngestStandIn() as ingest:
            settings = ForwarderSettings(
                url=ingest.url, api_key=ingest.api_key, batch_size=8, fetch_wait=0.2,
                max_requests_per_second=1000, ack_wait=5,
            )  # fmt: skip
            forwarder = Forwarder(billing, settings)
            stop = asyncio.Event()
            task = asyncio.create_task(forwarder.run(stop))
            try:

                async def drained() -> bool:
                    assert not task.done(), task
                    lag = forwarder.metrics.registry.get_sample_value(LAG)
                    return len(ingest.counts()) == 30 and lag == 0

                await wait_until_async(drained, 30, "30 events forwarded, consumer drained")
                info = await billing.jetstream().consumer_info(USAGE_STREAM, settings.durable)
                await wait_until_async(
                    lambda: _no_ack_pending(billing, settings.durable), 10, "every event acked"
                )
            finally:
                stop.set()
                await asyncio.wait_for(task, 10)
        assert info.num_pending == 0
        assert forwarder.metrics.registry.get_sample_value(DEAD_LETTERED) == 1
    finally:
        await billing.close()
    assert errors.seen == [], "the forwarder hit a permission it lacks"
    admin = await connect(cluster)
    try:
        js = admin.jetstream(timeout=ADMIN_TIMEOUT)
        dead = await js.get_last_msg(DEAD_LETTER_STREAM, "usage_dlq.tokens")
        assert dead.headers and dead.headers["Nats-Msg-Id"] == "bad-1"
        assert (await js.stream_info(USAGE_STREAM)).config.num_replicas == 3
    finally:
        await admin.close()


async def _no_ack_pending(nc: Any, durable: str) -> bool:
    info = await nc.jetstream().consumer_info(USAGE_STREAM, durable)
    return bool(info.num_ack_pending == 0)


async def test_projector_as_billing_projects_into_the_kv_bucket(
    cluster: LocalNatsCluster,
) -> None:
    events = lifecycle()
    # The bridge functions store these as the publisher user.
    await publish_deliveries(cluster.url(NATS_USER, nodes=[0]), events)
    billing, errors = await as_user(cluster, NATS_BILLING_USER)
    try:
        projector = TierProjector(billing, CONFIG, bucket_replicas=3, batch_size=4)
        stop = asyncio.Event()
        task = asyncio.create_task(projector.run(stop, fetch_wait=0.2))
        try:

            async def caught_up() -> bool:
                assert not task.done(), task
                if projector.kv is None:
                    return False
                state, _revision = await read_state(projector.kv, CUSTOMER)
                return state == fold(events)

            await wait_until_async(caught_up, 30, "the customer's state projected")
        finally:
            stop.set()
            await asyncio.wait_for(task, 10)
        # Later events updated the entry created by the first: compare-and-set writes.
        kv = await tiers_bucket(billing.jetstream())
        entry = await kv.get(CUSTOMER)
        assert entry.revision is not None and entry.revision > 1
        consumer = await billing.jetstream().consumer_info(STREAM, "tiers")
        assert consumer.num_pending == 0
    finally:
        await billing.close()
    assert errors.seen == [], "the projector hit a permission it lacks"
    admin = await connect(cluster)
    try:
        info = await admin.jetstream(timeout=ADMIN_TIMEOUT).stream_info(KV_STREAM)
        assert info.config.num_replicas == 3
    finally:
        await admin.close()


async def test_billing_cannot_publish_events_nor_delete_or_purge_streams(
    cluster: LocalNatsCluster,
) -> None:
    admin = await connect(cluster)
    try:
        await provision_usage_streams(admin.jetstream(timeout=ADMIN_TIMEOUT))
        await tiers_bucket(admin.jetstream(timeout=ADMIN_TIMEOUT))
    finally:
        await admin.close()
    nc, errors = await as_user(cluster, NATS_BILLING_USER)
    try:
        js = nc.jetstream(timeout=1)
        for subject in ("stripe.live.invoice.paid", "usage.tokens", "payments.secret"):
            await nc.publish(subject, b"{}")
            await errors.wait_for(f'permissions violation for publish to "{subject}"')
        for stream in (STREAM, USAGE_STREAM, KV_STREAM):
            await refused(
                nc, errors, f"$js.api.stream.delete.{stream}", lambda s=stream: js.delete_stream(s)
            )
            await refused(
                nc, errors, f"$js.api.stream.purge.{stream}", lambda s=stream: js.purge_stream(s)
            )
        await refused(
            nc, errors, "$js.api.stream.update.stripe", lambda: js.update_stream(name=STREAM)
        )
        await refused(
            nc, errors, "$js.api.stream.create.other", lambda: js.add_stream(name="OTHER")
        )
    finally:
        await nc.close()
    admin = await connect(cluster)
    try:
        names = {
            info.config.name for info in await admin.jetstream(timeout=ADMIN_TIMEOUT).streams_info()
        }
        assert names == {STREAM, USAGE_STREAM, DEAD_LETTER_STREAM, KV_STREAM}
    finally:
        await admin.close()


@pytest.mark.parametrize("user", [NATS_USER, NATS_USAGE_USER, "consumer"])
async def test_others_cannot_write_tiers_or_dead_letters(
    cluster: LocalNatsCluster, user: str
) -> None:
    nc, errors = await as_user(cluster, user)
    try:
        for subject in (f"$KV.{TIERS_BUCKET}.{CUSTOMER}", "usage_dlq.tokens"):
            await nc.publish(subject, b"{}")
            await errors.wait_for(f'permissions violation for publish to "{subject.lower()}"')
    finally:
        await nc.close()
