"""The ``entitlements-client`` user of the shared nats.conf, on the 3-node cluster rendered
from it: everything the in-process client does works (watches, gets, reservations by
compare-and-set, usage records), and what it must not do is refused by the server."""

from __future__ import annotations

from typing import Any

from stripe_bridge.billing.tiers import DEFAULT_TIERS
from stripe_bridge.billing.usage_counter import count_key, usage_buckets
from stripe_bridge.deploy.natsconf import ENTITLEMENTS_CLIENT_USER as USER
from stripe_bridge.inbox import inbox_prefix
from stripe_bridge.streams import USAGE_STREAM
from stripe_bridge_entitlements.client import EntitlementsClient
from stripe_bridge_entitlements.windows import Window
from stripe_bridge_testing.entitlements_bridge import provision_for_clients
from stripe_bridge_testing.natscluster import LocalNatsCluster
from stripe_bridge_testing.waiting import wait_until_async

from ..entitlements.test_client import NOW
from .conftest import ADMIN_TIMEOUT, STREAM, connect
from .test_auth import Errors, refused


async def _provision(cluster: LocalNatsCluster) -> Any:
    """What the bridge creates (as admin); returns the admin's connection."""
    admin = await connect(cluster)
    js = admin.jetstream(timeout=ADMIN_TIMEOUT)
    await provision_for_clients(js, DEFAULT_TIERS.model_dump_json().encode())
    return admin


async def test_the_client_user_can_do_what_the_client_needs_and_no_more(
    cluster: LocalNatsCluster,
) -> None:
    admin = await _provision(cluster)
    errors = Errors()
    client = await EntitlementsClient.connect(
        cluster.servers(),
        user=USER,
        password=cluster.passwords[USER],
        inbox_prefix=inbox_prefix(USER),
        error_cb=errors.record,
        nats_timeout=2,
    )
    try:
        # What the client needs: watches and gets of every bucket it reads, reservations
        # (a new id, a caller's id asked twice, release), usage handed over to a record.
        await client.serve("cus_auth")
        held = await client.reserve("cus_auth", "api_calls", 2)
        assert held.allowed and held.reservation_id and not held.degraded
        mine = await client.reserve("cus_auth", "api_calls", 3, reservation_id="job-1")
        again = await client.reserve("cus_auth", "api_calls", 3, reservation_id="job-1")
        assert mine.allowed and again.allowed and again.reservation_id == "job-1"
        assert await client.release("cus_auth", "api_calls", "job-1")
        seq = await client.record_usage(
            "cus_auth", "api_calls", 2, reservation_id=held.reservation_id
        )
        assert seq >= 1
        counts = (await usage_buckets(admin.jetstream(timeout=ADMIN_TIMEOUT)))[Window.DAY]
        await counts.put(count_key("cus_auth", "api_calls", Window.DAY, NOW), b'{"used": 50}')
        # free: 100 a day; 50 counted, 2 recorded but not yet counted (still held).
        await wait_until_async(
            lambda: client.check("cus_auth", "api_calls").remaining == 48, 30, "the count"
        )
        assert errors.seen == [], "the client's path hit a permission it lacks"

        # What it must not do: Stripe events, lifecycle events, counts, tiers, tier file.
        nc, js = client.nc, client.nc.jetstream(timeout=2)
        for subject in (
            "stripe.live.invoice.paid",
            "usage.lifecycle.subscription.started",
            "$KV.BILLING_USAGE_DAY.cus_auth.api_calls",
            "$KV.BILLING_TIERS.cus_auth",
            "$KV.BILLING_LIMITS.tiers",
            "stripe_dlq.redrive.x",
        ):
            await nc.publish(subject, b"{}")
            await errors.wait_for(f'permissions violation for publish to "{subject.lower()}"')
        # ...nor create, delete or purge streams, nor read STRIPE or USAGE.
        await refused(nc, errors, "$js.api.stream.create.evil", lambda: js.add_stream(name="EVIL"))
        for stream in ("KV_BILLING_RESERVATIONS", USAGE_STREAM):
            await refused(
                nc, errors, f"$js.api.stream.delete.{stream}",
                lambda s=stream: js.delete_stream(s),
            )  # fmt: skip
            await refused(
                nc, errors, f"$js.api.stream.purge.{stream}",
                lambda s=stream: js.purge_stream(s),
            )  # fmt: skip
        await refused(
            nc, errors, f"$js.api.stream.msg.get.{STREAM}",
            lambda: js.get_msg(STREAM, 1),
        )  # fmt: skip
        # ...nor read another user's replies.
        await nc.subscribe("_INBOX.>")
        await errors.wait_for('permissions violation for subscription to "_inbox.>"')
    finally:
        await client.close()
        await admin.close()
    # Nothing it was refused happened: the tier file and the counts are as written.
    admin = await connect(cluster)
    try:
        ajs = admin.jetstream(timeout=ADMIN_TIMEOUT)
        assert (await ajs.stream_info(USAGE_STREAM)).state.messages == 1
        tiers = await ajs.key_value("BILLING_LIMITS")
        assert (await tiers.get("tiers")).value == DEFAULT_TIERS.model_dump_json().encode()
    finally:
        await admin.close()
