"""Accounts and permissions of the shared nats.conf, enforced by a real cluster."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from stripe_bridge.backup import iter_stream
from stripe_bridge.natscluster import LocalNatsCluster

from .conftest import STREAM, connect


class Errors:
    """Collects the asynchronous errors (permission violations) a connection reports."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    async def record(self, exc: Exception) -> None:
        """The ``error_cb`` (nats-py wants a coroutine function)."""
        self.seen.append(str(exc).lower())

    async def wait_for(self, text: str, timeout: float = 5.0) -> None:
        """Until an error containing ``text`` was reported."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not any(text in error for error in self.seen):
            assert loop.time() < deadline, f"no error about {text!r}; saw {self.seen}"
            await asyncio.sleep(0.02)  # poll interval of the deadline loop


async def as_user(cluster: LocalNatsCluster, user: str) -> tuple[Any, Errors]:
    errors = Errors()
    return await connect(cluster, user, error_cb=errors.record), errors


async def test_publisher_publishes_only_bridge_subjects_and_cannot_delete(
    cluster: LocalNatsCluster,
) -> None:
    nc, errors = await as_user(cluster, "publisher")
    try:
        js = nc.jetstream(timeout=1)
        ack = await js.publish("stripe.test.invoice.paid", b"{}", headers={"Nats-Msg-Id": "a"})
        assert ack.seq == 1
        await nc.publish("payments.secret", b"x")
        await errors.wait_for('permissions violation for publish to "payments.secret"')
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
        assert (await admin.jetstream().stream_info(STREAM)).state.messages == 1
    finally:
        await admin.close()


async def test_consumer_reads_the_stream_but_cannot_publish_events(
    cluster: LocalNatsCluster,
) -> None:
    admin = await connect(cluster)
    try:
        for i in range(3):
            await admin.jetstream().publish(f"stripe.test.e{i}", b"{}")
    finally:
        await admin.close()
    nc, errors = await as_user(cluster, "consumer")
    try:
        subjects = [msg.subject async for msg in iter_stream(nc.jetstream(timeout=2), STREAM)]
        assert subjects == ["stripe.test.e0", "stripe.test.e1", "stripe.test.e2"]
        await nc.publish("stripe.test.forged", b"{}")
        await errors.wait_for('permissions violation for publish to "stripe.test.forged"')
    finally:
        await nc.close()


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
