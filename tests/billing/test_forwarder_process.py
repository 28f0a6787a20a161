"""``stripe-bridge forward-openmeter`` as a process: crash and restart, exit codes, metrics."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable

import pytest
from stripe_bridge.cli import main
from stripe_bridge.ops.natsserver import NatsServer
from stripe_bridge_testing.consumer_processes import ForwarderProcess
from stripe_bridge_testing.openmeter_standin import IngestStandIn
from stripe_bridge_testing.waiting import wait_until, wait_until_async

from .conftest import publish, records

Start = Callable[..., ForwarderProcess]


async def test_crash_between_accept_and_ack_loses_nothing(
    usage_nats: NatsServer, ingest: IngestStandIn, start_forwarder: Start
) -> None:
    await publish(usage_nats.url, records(200))
    # After five full batches, the sixth is accepted by OpenMeter, then the forwarder dies
    # before it reads the 204.
    ingest.hold_next(skip=5)
    first = start_forwarder(usage_nats.url, ingest)
    await asyncio.to_thread(ingest.held.wait, 30)
    assert ingest.held.is_set()
    first.crash()
    ingest.release()

    second = start_forwarder(usage_nats.url, ingest)
    await wait_until_async(lambda: len(ingest.counts()) >= 200, 30, "all 200 ids accepted")
    await asyncio.to_thread(
        wait_until,
        lambda: (
            second.metric("stripe_bridge_openmeter_consumer_lag") == 0
            and second.metric("stripe_bridge_openmeter_ack_pending") == 0
        ),
        10,
        "consumer drained",
    )
    counts = ingest.counts()
    assert len(counts) == 200  # no loss: every (id, source) reached OpenMeter
    twice = {key for key, n in counts.items() if n > 1}
    # At least once: exactly the batch in flight at the crash was sent again, with the same
    # (id, source), which OpenMeter's deduplication counts once.
    assert twice == set(ingest.held_events)
    assert len(twice) == 20
    assert max(counts.values()) == 2
    assert second.metric("stripe_bridge_openmeter_events_sent_total") == 100
    assert second.stop() == 0  # SIGTERM: clean exit


async def test_refused_api_key_exits_3(
    usage_nats: NatsServer, ingest: IngestStandIn, start_forwarder: Start
) -> None:
    await publish(usage_nats.url, records(1))
    process = start_forwarder(usage_nats.url, ingest, OPENMETER_API_KEY="wrong-key")
    assert process.process is not None
    code = await asyncio.to_thread(process.process.wait, 20)
    assert code == 3
    assert "openmeter refused the API key: status=401" in process.log()
    assert "wrong-key" not in process.log()
    assert ingest.accepted == []


def test_missing_openmeter_url_exits_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("OPENMETER_URL", raising=False)
    monkeypatch.setenv("OPENMETER_API_KEY", "secret-key-value")
    assert main(["forward-openmeter"]) == 2
    err = capsys.readouterr().err
    assert "invalid configuration: OPENMETER_URL: Field required" in err
    assert "secret-key-value" not in err


def test_sigterm_while_idle_exits_0(
    usage_nats: NatsServer, ingest: IngestStandIn, start_forwarder: Start
) -> None:
    process = start_forwarder(usage_nats.url, ingest)
    assert process.process is not None
    process.process.send_signal(signal.SIGTERM)
    assert process.process.wait(10) == 0
