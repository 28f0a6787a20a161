"""Accounts and permissions of the shared nats.conf, enforced by a real cluster."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from stripe_bridge.billing.projector import tiers_bucket
from stripe_bridge.billing.tiers import TIERS_BUCKET
from stripe_bridge.billing.usage import provision_usage_streams
from stripe_bridge.deploy.k8s import (
    NATS_BACKUP_USER,
    NATS_BILLING_USER,
    NATS_USAGE_USER,
    NATS_USER,
)
from stripe_bridge.inbox import inbox_prefix
from stripe_bridge.ops.backup_job import export_all, read_manifest
from stripe_bridge.streams import USAGE_STREAM, dead_letter_spec, provision
from stripe_bridge_events.deadletter import (
    DEAD_LETTER_STREAM,
    dead_letter,
    dead_letter_subject,
    redrive_filter,
)
from stripe_bridge_testing.natscluster import LocalNatsCluster
from stripe_bridge_testing.waiting import wait_until_async

from .conftest import ADMIN_TIMEOUT, STREAM, connect, provision_r3, settled
from .test_rolling_restart import roll_under_writes

KV_STREAM = f"KV_{TIERS_BUCKET}"
#: JetStream API timeout of the calls a user must be refused: a denied request gets no
#: answer, only this timeout (and the server's violation report, which ``refused`` awaits).
#: The calls a user may make wait ADMIN_TIMEOUT, generous for a loaded machine.
REFUSED_TIMEOUT = 2.0


class Errors:
    """Collects the asynchronous errors (permission violations) a connection reports."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    async def record(self, exc: Exception) -> None:
        """The ``error_cb`` (nats-py wants a coroutine function)."""
        self.seen.append(str(exc).lower())

    async def wait_for(self, text: str, timeout: float = 5.0) -> None:
        """Until an error containing ``text`` was reported."""
        await wait_until_async(
            lambda: any(text in error for error in self.seen), timeout, f"an error about {text!r}"
        )


async def as_user(cluster: LocalNatsCluster, user: str, **options: Any) -> tuple[Any, Errors]:
    errors = Errors()
    return await connect(cluster, user, error_cb=errors.record, **options), errors


async def consumer_settled(cluster: LocalNatsCluster, stream: str, durable: str) -> None:
    """Wait, as the admin, until a durable a user just created has settled (``settled``)."""
    admin = await connect(cluster)
    try:
        await settled(admin.jetstream(timeout=ADMIN_TIMEOUT), stream, durable)
    finally:
        await admin.close()


async def refused(nc: Any, errors: Errors, subject: str, action: Any) -> None:
    """``action`` (a JetStream API call) fails and the server reports the violation."""
    with pytest.raises(Exception):  # noqa: B017 - a denied request gets no responder
        await action()
    await errors.wait_for(subject.lower())


async def stored(stream: str, cluster: LocalNatsCluster) -> int:
    """How many messages ``stream`` holds (read as admin)."""
    admin = await connect(cluster)
    try:
        return int(
            (await admin.jetstream(timeout=ADMIN_TIMEOUT).stream_info(stream)).state.messages
        )
    finally:
        await admin.close()


async def test_publisher_publishes_only_bridge_subjects_and_cannot_delete(
    cluster: LocalNatsCluster,
) -> None:
    nc, errors = await as_user(cluster, "publisher")
    try:
        js = nc.jetstream(timeout=REFUSED_TIMEOUT)
        ack = await nc.jetstream(timeout=ADMIN_TIMEOUT).publish(
            "stripe.test.invoice.paid", b"{}", headers={"Nats-Msg-Id": "a"}
        )
        assert ack.seq == 1
        # Usage records are the usage user's: the webhook functions cannot forge them.
        for subject in ("payments.secret", "usage.tokens"):
            await nc.publish(subject, b"x")
            await errors.wait_for(f'permissions violation for publish to "{subject}"')
        with pytest.raises(Exception):  # noqa: B017 - a denied request gets no responder
            await js.delete_stream(STREAM)
        await errors.wait_for("$js.api.stream.delete.stripe")
        with pytest.raises(Exception):  # noqa: B017
            await js.purge_stream(STREAM)
        await errors.wait_for("$js.api.stream.purge.stripe")
    finally:
        await nc.close()
    admin = await connect(cluster)
    try:
        assert (
            await admin.jetstream(timeout=ADMIN_TIMEOUT).stream_info(STREAM)
        ).state.messages == 1
    finally:
        await admin.close()


async def test_usage_user_publishes_only_usage_records(cluster: LocalNatsCluster) -> None:
    admin = await connect(cluster)
    try:
        ajs = admin.jetstream(timeout=ADMIN_TIMEOUT)
        await provision_usage_streams(ajs)
        await settled(ajs, USAGE_STREAM)
    finally:
        await admin.close()
    nc, errors = await as_user(cluster, NATS_USAGE_USER)
    try:
        ack = await nc.jetstream(timeout=ADMIN_TIMEOUT).publish(
            "usage.tokens", b"{}", headers={"Nats-Msg-Id": "u-1"}
        )
        assert ack.stream == USAGE_STREAM and ack.seq == 1
        await nc.publish("stripe.live.invoice.paid", b"{}")
        await errors.wait_for('permissions violation for publish to "stripe.live.invoice.paid"')
    finally:
        await nc.close()
    assert await stored(STREAM, cluster) == 0


async def test_each_user_reads_only_its_own_inbox(cluster: LocalNatsCluster) -> None:
    admin = await connect(cluster)
    try:
        ajs = admin.jetstream(timeout=ADMIN_TIMEOUT)
        await provision_usage_streams(ajs)
        await settled(ajs, USAGE_STREAM)
    finally:
        await admin.close()
    spy, errors = await as_user(cluster, NATS_USER)
    billing, _ = await as_user(cluster, NATS_BILLING_USER)
    try:
        seen: list[str] = []

        async def record(msg: Any) -> None:
            seen.append(msg.subject)

        for foreign in ("_INBOX.>", f"{inbox_prefix(NATS_BILLING_USER)}.>", ">"):
            await spy.subscribe(foreign, cb=record)
            await errors.wait_for(f'permissions violation for subscription to "{foreign.lower()}"')
        # billing's reply (on its own inbox) reaches billing and nobody else.
        info = await billing.jetstream(timeout=ADMIN_TIMEOUT).stream_info(USAGE_STREAM)
        assert info.config.name == USAGE_STREAM
        await spy.flush()
        assert seen == []
        # The publisher's own inbox works (its PubAcks); the shared one is not allowed.
        ack = await spy.jetstream(timeout=ADMIN_TIMEOUT).publish("stripe.test.invoice.paid", b"{}")
        assert ack.seq == 1
    finally:
        await spy.close()
        await billing.close()
    shared, shared_errors = await as_user(cluster, NATS_USER, inbox_prefix="_INBOX")
    try:
        with pytest.raises(Exception):  # noqa: B017 - the PubAck cannot reach a denied inbox
            await shared.jetstream(timeout=REFUSED_TIMEOUT).publish(
                "stripe.test.invoice.paid", b"{}"
            )
        await shared_errors.wait_for('permissions violation for subscription to "_inbox.')
    finally:
        await shared.close()


async def test_consumer_reads_only_stripe_and_cannot_delete_consumers(
    cluster: LocalNatsCluster,
) -> None:
    from nats.js.api import AckPolicy, ConsumerConfig

    admin = await connect(cluster)
    try:
        ajs = admin.jetstream(timeout=ADMIN_TIMEOUT)
        for i in range(3):
            await ajs.publish(f"stripe.test.e{i}", b"{}")
        await provision_usage_streams(ajs)
        await ajs.publish("usage.tokens", b"{}")
        await tiers_bucket(ajs)
        # project-tiers' durable lives on STRIPE too.
        tiers = ConsumerConfig(durable_name="tiers", ack_policy=AckPolicy.EXPLICIT)
        await ajs.add_consumer(STREAM, tiers)
    finally:
        await admin.close()
    nc, errors = await as_user(cluster, "consumer")
    try:
        js = nc.jetstream(timeout=REFUSED_TIMEOUT)
        patient = nc.jetstream(timeout=ADMIN_TIMEOUT)
        sub = await patient.pull_subscribe("stripe.>", durable="downstream", stream=STREAM)
        await consumer_settled(cluster, STREAM, "downstream")
        msgs = await sub.fetch(3, timeout=ADMIN_TIMEOUT)
        assert [msg.subject for msg in msgs] == [f"stripe.test.e{i}" for i in range(3)]
        for msg in msgs:
            await msg.ack_sync(timeout=ADMIN_TIMEOUT)
        assert (await sub.consumer_info()).num_ack_pending == 0
        assert errors.seen == [], "the legitimate path hit a permission it lacks"

        await refused(
            nc, errors, "$js.api.consumer.delete.stripe.tiers",
            lambda: js.delete_consumer(STREAM, "tiers"),
        )  # fmt: skip
        for stream in (USAGE_STREAM, KV_STREAM):
            await refused(
                nc, errors, f"$js.api.consumer.create.{stream}",
                lambda s=stream: js.add_consumer(s, ConsumerConfig()),
            )  # fmt: skip
            await refused(
                nc, errors, f"$js.api.stream.msg.get.{stream}",
                lambda s=stream: js.get_msg(s, 1),
            )  # fmt: skip
        await refused(
            nc, errors, "$js.api.consumer.info.usage.forwarder",
            lambda: js.consumer_info(USAGE_STREAM, "forwarder"),
        )  # fmt: skip
        for subject in ("$JS.ACK.USAGE.forwarder.1.1.1.0.0", "stripe.test.forged"):
            await nc.publish(subject, b"+ACK")
            await errors.wait_for(f'permissions violation for publish to "{subject.lower()}"')
    finally:
        await nc.close()
    admin = await connect(cluster)
    try:
        assert (
            await admin.jetstream(timeout=ADMIN_TIMEOUT).consumer_info(STREAM, "tiers")
        ).name == "tiers"
    finally:
        await admin.close()
    assert await stored(STREAM, cluster) == 3


async def test_unknown_user_and_wrong_password_are_refused(cluster: LocalNatsCluster) -> None:
    import nats

    for user, password in (("publisher", "wrong"), ("nobody", cluster.passwords["admin"])):
        with pytest.raises(Exception, match=r"(?i)authorization"):
            await nats.connect(
                servers=cluster.servers(),
                user=user,
                password=password,
                allow_reconnect=False,
                error_cb=Errors().record,
            )


async def stored_once_ready(js: Any, subject: str, payload: bytes = b"{}") -> None:
    """Publish to a stream just created: its interest may not have reached every node yet
    (a KV bucket's too: a put is a publish on ``$KV.<bucket>.<key>``)."""
    from nats.js.errors import NoStreamResponseError

    async def published() -> bool:
        try:
            await js.publish(subject, payload, headers={"Nats-Msg-Id": subject})
        except NoStreamResponseError:
            return False
        return True

    await wait_until_async(published, 30, f"a stream storing {subject}")


async def _everything_stored(cluster: LocalNatsCluster) -> dict[str, int]:
    """Fill every kind of stream a backup reads; return each stream's message count."""
    from nats.js.api import AckPolicy, ConsumerConfig

    admin = await connect(cluster)
    try:
        ajs = admin.jetstream(timeout=ADMIN_TIMEOUT)
        for i in range(3):
            await ajs.publish(f"stripe.test.e{i}", b"{}", headers={"Nats-Msg-Id": f"e{i}"})
        await provision_usage_streams(ajs)
        await stored_once_ready(ajs, "usage.tokens")
        await provision(ajs, dead_letter_spec())
        await stored_once_ready(ajs, dead_letter_subject("downstream", "stripe.test.e0"))
        await tiers_bucket(ajs)
        await stored_once_ready(ajs, f"$KV.{TIERS_BUCKET}.cus_1", b'{"tier": "pro"}')
        # project-tiers' durable: a backup must not be able to touch it.
        tiers = ConsumerConfig(durable_name="tiers", ack_policy=AckPolicy.EXPLICIT)
        await ajs.add_consumer(STREAM, tiers)
        return {info.config.name: info.state.messages for info in await ajs.streams_info()}
    finally:
        await admin.close()


async def test_backup_user_exports_every_stream_and_bucket(
    cluster: LocalNatsCluster, tmp_path: Path
) -> None:
    counts = await _everything_stored(cluster)
    assert {STREAM, USAGE_STREAM, DEAD_LETTER_STREAM, KV_STREAM} <= set(counts)
    nc, errors = await as_user(cluster, NATS_BACKUP_USER)
    try:
        js = nc.jetstream(timeout=2)
        manifest = read_manifest(await export_all(js, tmp_path))
        assert {s.name: s.messages for s in manifest.streams} == counts
        # KV reads (direct get or message get, whichever the bucket allows).
        entry = await (await js.key_value(TIERS_BUCKET)).get("cus_1")
        assert entry.value == b'{"tier": "pro"}'
        denied = [e for e in errors.seen if "consumer.delete" not in e]
        assert denied == [], "the export hit a permission it lacks"
    finally:
        await nc.close()


async def test_backup_user_is_refused_every_write(cluster: LocalNatsCluster) -> None:
    from nats.js.api import ConsumerConfig, StreamConfig

    counts = await _everything_stored(cluster)
    nc, errors = await as_user(cluster, NATS_BACKUP_USER)
    try:
        js = nc.jetstream(timeout=1)
        for subject in ("stripe.test.forged", "usage.tokens", "stripe_dlq.redrive.tiers.x"):
            await nc.publish(subject, b"{}")
            await errors.wait_for(f'permissions violation for publish to "{subject}"')
        await refused(
            nc, errors, f"$kv.{TIERS_BUCKET.lower()}.cus_1",
            lambda: js.publish(f"$KV.{TIERS_BUCKET}.cus_1", b'{"tier": "free"}'),
        )  # fmt: skip
        await refused(
            nc, errors, "$js.api.stream.create.evil",
            lambda: js.add_stream(StreamConfig(name="EVIL", subjects=["evil.>"])),
        )  # fmt: skip
        await refused(
            nc, errors, "$js.api.stream.update.stripe",
            lambda: js.update_stream(StreamConfig(name=STREAM, subjects=["stripe.>"])),
        )  # fmt: skip
        for action, verb in ((js.delete_stream, "delete"), (js.purge_stream, "purge")):
            await refused(
                nc, errors, f"$js.api.stream.{verb}.stripe", lambda a=action: a(STREAM)
            )  # fmt: skip
        await refused(
            nc, errors, "$js.api.stream.msg.delete.stripe", lambda: js.delete_msg(STREAM, 1)
        )  # fmt: skip
        await refused(
            nc, errors, "$js.api.consumer.delete.stripe.tiers",
            lambda: js.delete_consumer(STREAM, "tiers"),
        )  # fmt: skip
        # Durable and named creates could redefine project-tiers' durable: refused.
        await refused(
            nc, errors, "$js.api.consumer.durable.create.stripe.tiers",
            lambda: js.add_consumer(STREAM, ConsumerConfig(durable_name="tiers")),
        )  # fmt: skip
        await refused(
            nc, errors, "$js.api.consumer.create.stripe.tiers",
            lambda: js.add_consumer(STREAM, ConsumerConfig(name="tiers")),
        )  # fmt: skip
    finally:
        await nc.close()
    admin = await connect(cluster)
    try:
        ajs = admin.jetstream(timeout=ADMIN_TIMEOUT)
        assert {i.config.name: i.state.messages for i in await ajs.streams_info()} == counts
        assert (await ajs.consumer_info(STREAM, "tiers")).config.durable_name == "tiers"
        assert (await (await ajs.key_value(TIERS_BUCKET)).get("cus_1")).value == b'{"tier": "pro"}'
    finally:
        await admin.close()


async def test_consumer_dead_letters_and_reads_its_redrives(cluster: LocalNatsCluster) -> None:
    admin = await connect(cluster)
    try:
        ajs = admin.jetstream(timeout=ADMIN_TIMEOUT)
        await provision(ajs, dead_letter_spec())
        await settled(ajs, DEAD_LETTER_STREAM)
        await ajs.publish("stripe.test.poison", b"{}")
        # What `stripe-bridge redrive` (an operator) publishes after a fix.
        await stored_once_ready(ajs, "stripe_dlq.redrive.downstream.stripe.test.fixed")
    finally:
        await admin.close()
    nc, errors = await as_user(cluster, "consumer")
    try:
        js = nc.jetstream(timeout=REFUSED_TIMEOUT)
        patient = nc.jetstream(timeout=ADMIN_TIMEOUT)
        sub = await patient.pull_subscribe("stripe.>", durable="downstream", stream=STREAM)
        await consumer_settled(cluster, STREAM, "downstream")
        [poison] = await sub.fetch(1, timeout=ADMIN_TIMEOUT)
        subject, headers = dead_letter(
            poison.subject, poison.headers, "downstream", "unparseable", STREAM,
            poison.metadata.sequence.stream,
        )  # fmt: skip
        ack = await patient.publish(subject, poison.data, headers=headers)
        assert ack.stream == DEAD_LETTER_STREAM
        await poison.term()
        redriven = await patient.pull_subscribe(
            redrive_filter("downstream"), durable="downstream-redrive", stream=DEAD_LETTER_STREAM
        )
        await consumer_settled(cluster, DEAD_LETTER_STREAM, "downstream-redrive")
        [fixed] = await redriven.fetch(1, timeout=ADMIN_TIMEOUT)
        assert fixed.subject == "stripe_dlq.redrive.downstream.stripe.test.fixed"
        await fixed.ack_sync(timeout=ADMIN_TIMEOUT)
        assert errors.seen == [], "the dead-letter path hit a permission it lacks"

        # Redrives are the operators': a consumer cannot forge one for another durable.
        await nc.publish("stripe_dlq.redrive.tiers.stripe.test.forged", b"{}")
        await errors.wait_for('permissions violation for publish to "stripe_dlq.redrive.tiers')
        for action, verb in ((js.delete_stream, "delete"), (js.purge_stream, "purge")):
            await refused(
                nc, errors, f"$js.api.stream.{verb}.stripe_dlq",
                lambda a=action: a(DEAD_LETTER_STREAM),
            )  # fmt: skip
        await refused(
            nc, errors, "$js.api.consumer.delete.stripe_dlq.downstream-redrive",
            lambda: js.delete_consumer(DEAD_LETTER_STREAM, "downstream-redrive"),
        )  # fmt: skip
    finally:
        await nc.close()
    admin = await connect(cluster)
    try:
        ajs = admin.jetstream(timeout=ADMIN_TIMEOUT)
        assert (await ajs.stream_info(DEAD_LETTER_STREAM)).state.messages == 2
        redrive = await ajs.consumer_info(DEAD_LETTER_STREAM, "downstream-redrive")
        assert redrive.num_ack_pending == 0
    finally:
        await admin.close()


def without_backup_user(conf: str) -> str:
    """nats.conf as it was before the ``backup`` user (the config a rolling change replaces)."""
    start = conf.index("      {\n        user: backup\n")
    end = conf.index("\n      }\n", start) + len("\n      }\n")
    return conf[:start] + conf[end:]


@pytest.mark.timeout(400)
def test_adding_the_backup_user_is_a_rolling_change_that_loses_no_write(tmp_path: Path) -> None:
    """docs/deploy.md's order: the Secret key first (the servers' environment has it), then
    NATS rolled with the new nats.conf one pod at a time, under writes to R3 STRIPE."""
    nodes = LocalNatsCluster(tmp_path / "cluster")
    confs = [tmp_path / "cluster" / f"n{i}" / "nats.conf" for i in range(len(nodes.nodes))]
    new = [conf.read_text() for conf in confs]
    for conf, text in zip(confs, new, strict=True):
        conf.write_text(without_backup_user(text))
    try:
        nodes.start()
        provision_r3(nodes)

        async def backup_logs_in() -> bool:
            try:
                nc = await connect(nodes, NATS_BACKUP_USER, allow_reconnect=False)
            except Exception:  # the old config knows no such user: authorization violation
                return False
            try:
                name: str = (await nc.jetstream().stream_info(STREAM)).config.name
                return name == STREAM
            finally:
                await nc.close()

        assert asyncio.run(backup_logs_in()) is False
        # The ConfigMap changed: each server reads the new file when the roll restarts it.
        for conf, text in zip(confs, new, strict=True):
            conf.write_text(text)
        rolls, writes = asyncio.run(roll_under_writes(nodes))
        print(f"writes {writes.acked} acked, {writes.retried} retried, {writes.failed} lost")
        assert [roll.node for roll in rolls] == [2, 1, 0]
        assert writes.acked > 0 and writes.failed == 0, writes.errors
        assert asyncio.run(backup_logs_in()) is True
    finally:
        nodes.stop()
