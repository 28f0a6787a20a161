"""Agent Town end to end (issue #19), every part a real process or server.

A Free customer's town is refused its fourth citizen and the Teams features with a reason
it can show; the customer upgrades through the checkout function (against the Stripe
stand-in), the stand-in sends the signed webhooks of the paid session to the bridge's
webhook function, ``project-tiers`` projects the tier into KV, the town's client sees Teams
and the fourth citizen moves in. The delay from the first webhook to that moment is
printed. Tokens per agent and sessions reach the OpenMeter stand-in through the USAGE
stream and ``forward-openmeter``, each exactly once, and ``count-usage`` counts them.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from stripe_bridge import registry
from stripe_bridge.billing.tiers import TierConfig
from stripe_bridge.ops.natsserver import NatsServer
from stripe_bridge_entitlements.client import EntitlementsClient
from stripe_bridge_entitlements.reservations import publish_tier_file
from stripe_bridge_testing.consumer_processes import READY, ConsumerProcess, ForwarderProcess
from stripe_bridge_testing.deliveries import SECRET
from stripe_bridge_testing.openmeter_standin import IngestStandIn
from stripe_bridge_testing.repo import REPO_ROOT
from stripe_bridge_testing.stripe_standin import StripeStandIn
from stripe_bridge_testing.waiting import wait_until_async

from examples.agent_town import Refused, Session, Town

from ..conftest import FunctionFactory

TIERS = REPO_ROOT / "examples" / "agent_town" / "tiers.yaml"
CUSTOMER = "cus_AgentTown1"
#: Generous: every wait ends as soon as its condition holds (2 cores shared by many runs).
DEADLINE = 60


@pytest.fixture
def consumers(stream: NatsServer, tmp_path: Path) -> Iterator[IngestStandIn]:
    """project-tiers and count-usage with the town's tier file, and forward-openmeter to
    OpenMeter's ingest stand-in (without dedupe: every delivery counts), which it yields."""
    tiers = ["--nats-url", stream.url, "--tiers-file", str(TIERS)]
    with IngestStandIn() as ingest:
        started = [
            ConsumerProcess(command, tiers, {}, tmp_path / "consumers", ready=READY[command])
            for command in ("project-tiers", "count-usage")
        ]
        # A long ack wait: a slow machine must not make the forwarder deliver a batch twice.
        started.append(
            ForwarderProcess(stream.url, ingest, tmp_path / "consumers", OPENMETER_ACK_WAIT="30")
        )
        try:
            for process in started:
                process.start(DEADLINE)
            yield ingest
        finally:
            for process in started:
                process.stop()


async def test_a_free_town_upgrades_to_teams_and_its_agents_are_metered_once(
    stream: NatsServer, consumers: IngestStandIn, start_function: FunctionFactory
) -> None:
    tiers = {"BILLING_TIERS_FILE": str(TIERS)}
    webhook = start_function(registry.CATCH_ALL, NATS_URL=stream.url)
    entitlements = start_function("billing_entitlements", NATS_URL=stream.url, **tiers)
    with StripeStandIn(webhook_url=webhook.url, webhook_secret=SECRET) as stripe_api:
        checkout = start_function(
            "billing_checkout",
            STRIPE_API_KEY=stripe_api.api_key,
            STRIPE_API_BASE=stripe_api.url,
            STRIPE_MAX_NETWORK_RETRIES="0",
            CHECKOUT_SUCCESS_URL="https://town.example/welcome",
            **tiers,
        )
        async with httpx.AsyncClient(timeout=30) as http:
            # The HTTP function answers as the town will (and publishes the tier file the
            # in-process client reads, creating the buckets if the consumers had not).
            fourth = {"customer": CUSTOMER, "meter": "citizens", "quantity": 4}
            over_http = await http.post(entitlements.url + "v1/check", json=fourth)
            assert over_http.status_code == 200 and over_http.json()["allowed"] is False
            client = await EntitlementsClient.connect(stream.url)
            try:
                town = await Town.open(client, CUSTOMER)
                for name in ("Ada", "Grace", "Linus"):
                    town.add_citizen(name)
                assert _refusal(lambda: town.add_citizen("Margaret")) == (
                    "Free allows 3 citizens; upgrade to Teams"
                )
                assert _refusal(town.share_memory) == (
                    "shared memory is not in Free; upgrade to Teams"
                )
                assert _refusal(lambda: town.add_citizen("Visitor", tenant="guests")) == (
                    "multi tenant is not in Free; upgrade to Teams"
                )
                sessions = [await town.run_session("Ada")]

                teams = {"customer_id": CUSTOMER, "tier": "teams"}
                paying = await http.post(checkout.url, json=teams)
                assert paying.status_code == 200, paying.text
                delivering = asyncio.create_task(
                    asyncio.to_thread(stripe_api.complete_checkout, paying.json()["id"])
                )
                assert await client.wait_for_tier(CUSTOMER, "teams", DEADLINE)
                allowed_at = time.time()
                town.add_citizen("Margaret")
                deliveries = await delivering
                assert [d.status for d in deliveries] == [200, 200], deliveries
                delay = allowed_at - deliveries[0].sent_at
                print(f"\nwebhook -> 4th citizen allowed: {delay * 1000:.0f} ms")

                town.share_memory()
                town.add_citizen("Visitor", tenant="guests")
                sessions.append(await town.run_session("Grace"))
                # Shared memory within a tenant; the other tenant hears nothing.
                assert "Grace to Ada: good morning, Ada" in town.citizens["Linus"].memory
                assert town.citizens["Visitor"].memory == []
                with pytest.raises(ValueError, match="different tenants"):
                    town.talk("Grace", "Visitor", "hello")
                await _counted(client, sessions)
            finally:
                await client.close()
    await _metered_once(consumers, sessions)


def _refusal(action: Callable[[], object]) -> str:
    """What the town tells its user when ``action`` is refused."""
    with pytest.raises(Refused) as refused:
        action()
    return str(refused.value)


async def _counted(client: EntitlementsClient, sessions: list[Session]) -> None:
    """count-usage counted every token and session: the client's memory shows it."""
    tokens = sum(s.tokens for s in sessions)
    await wait_until_async(
        lambda: client.check(CUSTOMER, "tokens").remaining == 1_000_000 - tokens,
        DEADLINE,
        "the tokens counted",
    )
    # Unlimited on Teams: no remaining to read; the count is in the stand-in below.


async def _metered_once(ingest: IngestStandIn, sessions: list[Session]) -> None:
    """Each session's tokens and interactions (by agent) and the session itself reached
    OpenMeter once."""
    await wait_until_async(
        lambda: len(ingest.events) >= 3 * len(sessions), DEADLINE, "usage in OpenMeter"
    )
    assert set(ingest.counts().values()) == {1}, ingest.counts()
    got = {(e["type"], e["data"]["session_id"]): e for e in ingest.events}
    assert len(got) == len(ingest.events) == 3 * len(sessions)
    for session in sessions:
        tokens, counted = got["tokens", session.id], got["sessions", session.id]
        interactions = got["citizen_interactions", session.id]
        assert tokens["data"]["value"] == session.tokens > 0
        assert interactions["data"]["value"] == len(session.lines) > 0
        assert counted["data"]["value"] == 1
        for event in (tokens, interactions, counted):
            assert (event["subject"], event["data"]["agent_id"]) == (CUSTOMER, session.agent)


async def test_a_town_that_cannot_reach_nats_says_so_instead_of_selling_an_upgrade(
    tmp_path: Path,
) -> None:
    """Free's rule when NATS is unreachable is ``deny``: the town refuses, but its user is
    told the plan cannot be checked (nothing to buy), not "upgrade to Teams"."""
    import nats

    server = NatsServer(tmp_path / "nats").start()
    try:
        nc = await nats.connect(server.url)
        try:
            tier_file = TierConfig.load(TIERS).model_dump_json().encode()
            await publish_tier_file(nc.jetstream(), tier_file)
        finally:
            await nc.close()
        client = await EntitlementsClient.connect(server.url, unavailable_after=1)
        try:
            town = await Town.open(client, CUSTOMER)
            await wait_until_async(lambda: client.tier_file is not None, DEADLINE, "tier file")
            town.add_citizen("ada")
            with pytest.raises(Refused, match="upgrade to Teams"):
                town.share_memory()  # the plan's refusal, while NATS is there
            server.stop()
            await wait_until_async(
                lambda: client.check(CUSTOMER, "citizens", 2).degraded, DEADLINE, "degraded"
            )
            with pytest.raises(Refused) as refused:
                town.add_citizen("bob")
            assert str(refused.value) == (
                "citizens: the plan cannot be checked right now (nats_unavailable)"
            )
            assert "ada" in town.citizens and "bob" not in town.citizens
        finally:
            await client.close()
    finally:
        server.stop()
