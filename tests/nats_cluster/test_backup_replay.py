"""Disaster recovery against a real nats-server: export/import and replay from Stripe's API."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections import Counter
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from stripe_bridge.cli import main
from stripe_bridge.ops.backup import iter_stream
from stripe_bridge.ops.natsserver import NatsServer
from stripe_bridge_testing.deliveries import fixture_event, post_event, stream_messages
from stripe_bridge_testing.stripe_standin import StripeStandIn
from stripe_bridge_testing.waiting import wait_until_async

from ..conftest import FunctionFactory, provision_stream

#: Real Stripe payloads: served types, and types no function serves (stored by catch-all rules).
REPLAYED = (
    "invoice_paid",
    "invoice_finalized",
    "customer_updated",
    "charge_succeeded",
    "subscription_created",
    "subscription_deleted",
    "subscription_updated",
    "active_entitlement_summary_updated",
    "product_created",
)
#: Older than the replay window chosen below: the API must not be asked for them.
TOO_OLD = ("checkout_session_completed", "payment_intent_succeeded")
API_KEY = "rk_test_replay"


def snapshot(messages: list[Any]) -> list[tuple[str, dict[str, str], bytes]]:
    """What a restore must reproduce: subject, headers, data, in order."""
    return [(m.subject, dict(m.headers or {}), m.data) for m in messages]


async def wipe(url: str) -> None:
    """Delete the stream (the disaster), then provision it again, empty."""
    import nats

    nc = await nats.connect(url)
    try:
        await nc.jetstream().delete_stream("STRIPE")
    finally:
        await nc.close()
    await asyncio.to_thread(provision_stream, url)


async def test_export_wipe_import_restores_exactly_and_again_adds_nothing(
    stream: NatsServer,
    start_function: FunctionFactory,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    fn = start_function(NATS_URL=stream.url)
    for name in ("invoice_paid", "charge_succeeded", "subscription_updated", "customer_updated"):
        assert post_event(fn.url, fixture_event(name)).status_code == 200
    before = snapshot(await stream_messages(stream.url))
    backup = tmp_path / "stripe.jsonl"

    assert (
        await asyncio.to_thread(main, ["export", "--nats-url", stream.url, "--out", str(backup)])
        == 0
    )
    lines = [json.loads(line) for line in backup.read_text().splitlines()]
    assert [line["seq"] for line in lines] == [1, 2, 3, 4]
    assert all(line["headers"]["Nats-Msg-Id"].startswith("evt_") for line in lines)
    assert {"subject", "headers", "data", "seq", "time"} <= set(lines[0])

    await wipe(stream.url)
    assert await stream_messages(stream.url) == []
    assert await asyncio.to_thread(main, ["import", "--nats-url", stream.url, str(backup)]) == 0
    assert "published 4, duplicate 0" in capsys.readouterr().out
    assert snapshot(await stream_messages(stream.url)) == before

    assert await asyncio.to_thread(main, ["import", "--nats-url", stream.url, str(backup)]) == 0
    assert "published 0, duplicate 4" in capsys.readouterr().out
    assert snapshot(await stream_messages(stream.url)) == before


async def test_import_adds_nothing_even_after_the_duplicate_window(
    nats_server: NatsServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import nats

    url = nats_server.url
    await asyncio.to_thread(provision_stream, url, duplicate_window_seconds=0.2)
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        for i in range(3):
            await js.publish(f"stripe.test.e{i}", b"{}", headers={"Nats-Msg-Id": f"evt_{i}"})
        backup = tmp_path / "backup.jsonl"
        assert (
            await asyncio.to_thread(main, ["export", "--nats-url", url, "--out", str(backup)]) == 0
        )
        # Until JetStream forgets a published id, publishing it again is a duplicate.
        await js.publish("stripe.test.probe", b"", headers={"Nats-Msg-Id": "p"})

        async def window_over() -> bool:
            ack = await js.publish("stripe.test.probe", b"", headers={"Nats-Msg-Id": "p"})
            return not ack.duplicate

        await wait_until_async(window_over, 60, "the end of the duplicate window")
    finally:
        await nc.close()

    assert await asyncio.to_thread(main, ["import", "--nats-url", url, str(backup)]) == 0
    assert "published 0, duplicate 3" in capsys.readouterr().out
    ids = Counter(m.headers["Nats-Msg-Id"] for m in await stream_messages(url))
    assert ids == Counter({"evt_0": 1, "evt_1": 1, "evt_2": 1, "p": 2})


async def test_export_since_starts_at_the_store_time(stream: NatsServer) -> None:
    import nats

    nc = await nats.connect(stream.url)
    try:
        js = nc.jetstream()
        for i in range(3):
            await js.publish(f"stripe.test.early.{i}", b"{}", headers={"Nats-Msg-Id": f"e{i}"})
        stored_at = [m async for m in iter_stream(js, "STRIPE")][-1].metadata.timestamp
        # nats-py rounds the server's nanosecond store time to the nearest microsecond,
        # sometimes up: start a microsecond earlier so the third message is included.
        third = stored_at - timedelta(microseconds=1)
        for i in range(2):
            await js.publish(f"stripe.test.late.{i}", b"{}", headers={"Nats-Msg-Id": f"l{i}"})
        later = [m.subject async for m in iter_stream(js, "STRIPE", since=third)]
    finally:
        await nc.close()
    assert later == ["stripe.test.early.2", "stripe.test.late.0", "stripe.test.late.1"]


def test_import_rejects_a_file_that_is_not_an_export(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"subject": "stripe.test.x"}\n')
    assert main(["import", "--nats-url", "nats://127.0.0.1:1", str(bad)]) == 2
    assert f"{bad}:1: not an export line" in capsys.readouterr().err


def test_export_to_an_unreachable_server_fails_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = "nats://user:hunter2@127.0.0.1:1"
    assert main(["export", "--nats-url", url, "--out", str(tmp_path / "x.jsonl")]) == 3
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "hunter2" not in err


def _replay(
    nats_url: str, since: str, api: str, key: str = API_KEY
) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "stripe_bridge.cli", "replay", "--nats-url", nats_url]
    command += ["--since", since, "--api-base", api, "--api-key", key]
    return subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)


def _window() -> str:
    """A --since including REPLAYED, excluding TOO_OLD (their created times are days apart)."""
    newest_old = max(fixture_event(name)["created"] for name in TOO_OLD)
    oldest_kept = min(fixture_event(name)["created"] for name in REPLAYED)
    assert newest_old < oldest_kept
    cutoff = (newest_old + oldest_kept) // 2
    return f"{int(time.time()) - cutoff}s"


async def test_replay_stores_missed_events_once_including_unserved_types(
    stream: NatsServer, start_function: FunctionFactory
) -> None:
    events = [fixture_event(name) for name in REPLAYED + TOO_OLD]
    fn = start_function(NATS_URL=stream.url)
    # Two arrived as webhooks before the outage; replay must not store them again.
    for name in ("invoice_paid", "charge_succeeded"):
        assert post_event(fn.url, fixture_event(name)).status_code == 200

    with StripeStandIn(API_KEY, events) as api:
        first = await asyncio.to_thread(_replay, stream.url, _window(), api.url)
        assert first.returncode == 0, first.stderr
        assert "published 7, duplicate 2, failed 0" in first.stdout
        assert "9/9" in first.stderr  # the progress bar reached the end
        assert len(api.calls) == 3  # pages of 4 + 4 + 1: starting_after was followed
        assert "starting_after" in api.calls[1][2]

        again = await asyncio.to_thread(_replay, stream.url, _window(), api.url)
        assert again.returncode == 0, again.stderr
        assert "published 0, duplicate 9, failed 0" in again.stdout

    messages = await stream_messages(stream.url)
    ids = Counter(m.headers["Nats-Msg-Id"] for m in messages)
    assert ids == Counter(fixture_event(name)["id"] for name in REPLAYED)
    subjects = {m.subject for m in messages}
    assert "stripe.test.product.created" in subjects  # no function serves product.created
    # Oldest first, as the events happened (the API lists newest first).
    replayed = [json.loads(m.data)["data"]["stripe"]["created"] for m in messages[2:]]
    assert replayed == sorted(replayed)


async def test_replay_with_a_rejected_key_exits_3_without_the_key(stream: NatsServer) -> None:
    with StripeStandIn(API_KEY, [fixture_event("invoice_paid")]) as api:
        result = await asyncio.to_thread(_replay, stream.url, "1d", api.url, "rk_test_wrong")
    assert result.returncode == 3
    assert "rejected the API key" in result.stderr
    assert "rk_test_wrong" not in result.stderr + result.stdout


async def test_replay_without_nats_exits_3(tmp_path: Path) -> None:
    with StripeStandIn(API_KEY, [fixture_event("invoice_paid")]) as api:
        result = await asyncio.to_thread(_replay, "nats://127.0.0.1:1", "1d", api.url)
    assert result.returncode == 3
    assert result.stderr.strip().startswith("stripe-bridge replay: nats://127.0.0.1:1")
