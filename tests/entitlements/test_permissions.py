"""The in-process client's documented NATS permissions (``stripe_bridge_entitlements.
permissions``) are enough for everything it does, and it cannot write counts or tiers."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from stripe_bridge.ops.natsserver import NatsServer
from stripe_bridge_entitlements.client import EntitlementsClient
from stripe_bridge_entitlements.permissions import publish_allow, subscribe_allow
from stripe_bridge_entitlements.windows import Window
from stripe_bridge_testing.waiting import wait_until_async

from .test_client import _put_count, provision

INBOX = "_INBOX_app"


def _conf(store: Path) -> str:
    app = {
        "user": "app",
        "password": "app-secret",
        "permissions": {
            "publish": {"allow": publish_allow(["api_calls"])},
            "subscribe": {"allow": subscribe_allow(INBOX)},
        },
    }
    admin = {"user": "admin", "password": "admin-secret"}
    # nats.conf accepts JSON objects and arrays as values.
    users = json.dumps([admin, app])
    return (
        f'jetstream {{ store_dir: "{store}" }}\n'
        f"accounts {{ BRIDGE {{ jetstream: enabled, users: {users} }} }}\n"
    )


async def test_the_documented_permissions_are_enough_and_no_more(tmp_path: Path) -> None:

    conf = tmp_path / "nats.conf"
    conf.write_text(_conf(tmp_path / "js"))
    errors: list[str] = []

    async def seen(exc: Exception) -> None:
        errors.append(str(exc))

    server = NatsServer(tmp_path / "nats", config_file=conf).start()
    try:
        admin = server.url.replace("nats://", "nats://admin:admin-secret@")
        await provision(admin)
        client = await EntitlementsClient.connect(
            server.url, user="app", password="app-secret", inbox_prefix=INBOX, error_cb=seen
        )
        try:
            await client.serve("cus_p")
            held = await client.reserve("cus_p", "api_calls", 2)
            assert held.allowed and held.reservation_id
            await client.record_usage("cus_p", "api_calls", 2, reservation_id=held.reservation_id)
            assert not await client.release("cus_p", "api_calls", "never-made")
            await _put_count(admin, "cus_p", "api_calls", Window.DAY, 50)
            await wait_until_async(
                lambda: client.check("cus_p", "api_calls").remaining == 48, 10, "the count"
            )
            assert errors == []
            # Read-mostly: writing a count is refused.
            await client.nc.publish("$KV.BILLING_USAGE_DAY.cus_p.api_calls.0", b"{}")
            await wait_until_async(lambda: _refused(errors), 30, "the write refused")
        finally:
            await client.close()
    finally:
        server.stop()


def _refused(errors: list[Any]) -> bool:
    return any("permissions violation" in e and "billing_usage_day" in e for e in errors)
