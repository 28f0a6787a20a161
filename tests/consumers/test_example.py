"""docs/consumers.md's example consumer, run as written, and ``redrive`` of its dead letters.

The bridge's real catch-all function stores real Stripe payloads in a real nats-server;
the example consumer applies them, dead-letters a poison message on its last delivery,
and after the "fix" ``stripe-bridge redrive`` hands it back to the same consumer.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import re
from pathlib import Path
from types import ModuleType

import pytest
from stripe_bridge.cli import main
from stripe_bridge.ops.natsserver import NatsServer
from stripe_bridge_events import TypedEvent
from stripe_bridge_events.deadletter import REASON_HEADER, SOURCE_HEADER
from stripe_bridge_testing.deliveries import fixture_event, post_event, stream_messages
from stripe_bridge_testing.repo import REPO_ROOT
from stripe_bridge_testing.waiting import wait_until_async

from ..conftest import FunctionFactory

DOC = REPO_ROOT / "docs" / "consumers.md"
DURABLE = "example"


def example_module(tmp_path: Path) -> ModuleType:
    """The Python block after ``<!-- example: consumer.py -->`` in docs/consumers.md."""
    match = re.search(r"<!-- example: consumer.py -->\n```python\n(.*?)```", DOC.read_text(), re.S)
    assert match, "docs/consumers.md lost its example"
    path = tmp_path / "consumer.py"
    path.write_text(match.group(1))
    spec = importlib.util.spec_from_file_location("docs_example_consumer", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


async def count(url: str, stream: str) -> int:
    return len(await stream_messages(url, stream))


async def test_the_example_consumer_dead_letters_a_poison_message_and_gets_it_back(
    stream: NatsServer,
    start_function: FunctionFactory,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    url = stream.url
    assert await asyncio.to_thread(main, ["provision", "--nats-url", url, "--dead-letters"]) == 0
    assert "stream STRIPE_DLQ (stripe_dlq.>, R1): created" in capsys.readouterr().out
    poison = fixture_event("invoice_paid", fresh_id=True)
    poison["data"]["object"]["id"] = "in_poison"
    fn = start_function(NATS_URL=url)
    sent = [fixture_event(n) for n in ("invoice_paid", "invoice_payment_failed")]
    for event in [*sent, poison, fixture_event("charge_succeeded")]:
        assert post_event(fn.url, event).status_code == 200
    applied: list[str] = []
    broken = True

    async def apply(event: TypedEvent) -> None:
        if broken and event.subject == "in_poison":
            raise RuntimeError("bug: cannot handle in_poison")
        applied.append(event.id)

    consumer = example_module(tmp_path)
    stop = asyncio.Event()
    task = asyncio.create_task(consumer.consume(url, DURABLE, apply, stop))
    try:

        async def dead_lettered() -> bool:
            if task.done():
                task.result()  # the consumer died: show why, now
            return await count(url, "STRIPE_DLQ") == 1

        await wait_until_async(dead_lettered, 30, "the poison message dead-lettered")
        assert sorted(applied) == sorted(e["id"] for e in sent)  # charge.* is not subscribed
        (letter,) = await stream_messages(url, "STRIPE_DLQ")
        assert letter.subject == f"stripe_dlq.dead.{DURABLE}.stripe.test.invoice.paid"
        assert letter.headers[REASON_HEADER] == "RuntimeError: bug: cannot handle in_poison"
        poison_seq = [
            m.seq for m in await stream_messages(url) if m.headers["Nats-Msg-Id"] == poison["id"]
        ]
        assert letter.headers[SOURCE_HEADER] == f"STRIPE:{poison_seq[0]}"
        assert json.loads(letter.data)["id"] == poison["id"]  # the body as stored

        redrive = ["redrive", "--nats-url", url]
        assert await asyncio.to_thread(main, [*redrive, "--dry-run"]) == 0
        assert ": would_redrive (RuntimeError: bug" in capsys.readouterr().out
        assert await count(url, "STRIPE_DLQ") == 1

        broken = False  # the fix is deployed
        assert await asyncio.to_thread(main, [*redrive, "--reason", "in_poison"]) == 0
        out = capsys.readouterr().out
        assert f"-> stripe_dlq.redrive.{DURABLE}.stripe.test.invoice.paid: redriven" in out

        async def poison_applied() -> bool:
            if task.done():
                task.result()
            return poison["id"] in applied

        await wait_until_async(poison_applied, 30, "the redriven message applied")
    finally:
        stop.set()
        await task
    # STRIPE holds every event once, as before; the dead letter is gone, its redrive stays.
    assert [m.headers["Nats-Msg-Id"] for m in await stream_messages(url)] == [
        *(e["id"] for e in sent),
        poison["id"],
        fixture_event("charge_succeeded")["id"],
    ]
    (left,) = await stream_messages(url, "STRIPE_DLQ")
    assert left.subject.startswith(f"stripe_dlq.redrive.{DURABLE}.")
    assert await asyncio.to_thread(main, ["redrive", "--nats-url", url]) == 0
    assert "STRIPE_DLQ: 0 chosen" in capsys.readouterr().err


async def test_redrive_usage_dead_letters_and_refuse_those_without_a_target(
    nats_server: NatsServer, capsys: pytest.CaptureFixture[str]
) -> None:
    from stripe_bridge.billing.usage import provision_usage_streams

    import nats

    url = nats_server.url
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        await provision_usage_streams(js)
        # As the OpenMeter forwarder dead-letters (no redrive header: the fallback applies).
        headers = {"Nats-Msg-Id": "u1", REASON_HEADER: "400: invalid subject"}
        await js.publish("usage_dlq.tokens", b'{"id": "u1"}', headers=headers)
        await js.publish("usage_dlq.tokens", b'{"id": "u2"}', headers={REASON_HEADER: "400: x"})
    finally:
        await nc.close()
    argv = ["redrive", "--nats-url", url, "--from", "USAGE_DLQ", "--json"]
    assert await asyncio.to_thread(main, [*argv, "--seq", "1"]) == 0
    (result,) = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert result == {
        "seq": 1,
        "subject": "usage_dlq.tokens",
        "target": "usage.tokens",
        "reason": "400: invalid subject",
        "outcome": "redriven",
    }
    (usage,) = await stream_messages(url, "USAGE")
    assert (usage.subject, usage.data) == ("usage.tokens", b'{"id": "u1"}')
    assert usage.headers["Stripe-Bridge-Redriven-From"] == "USAGE_DLQ:1"
    assert REASON_HEADER not in usage.headers
    assert [m.seq for m in await stream_messages(url, "USAGE_DLQ")] == [2]

    # A stream redrive does not know, whose message names no target: reported, kept, exit 1.
    nc = await nats.connect(url)
    try:
        from nats.js.api import StreamConfig

        await nc.jetstream().add_stream(StreamConfig(name="OTHER_DLQ", subjects=["other.>"]))
        await nc.jetstream().publish("other.x", b"{}")
    finally:
        await nc.close()
    other = ["redrive", "--nats-url", url, "--from", "OTHER_DLQ"]
    assert await asyncio.to_thread(main, other) == 1
    assert "#1 other.x -> -: no_target (-)" in capsys.readouterr().out
    assert await count(url, "OTHER_DLQ") == 1
