"""``python -m examples.agent_town``: the town of one customer against a running bridge.

Citizens move in until the plan refuses one, an agent runs a session, and with
``--wait-for-upgrade`` the town waits for the customer's upgrade to Teams (a paid Checkout
in Stripe test mode) and lets the refused citizen in. README.md here says what to start.
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

import yaml
from stripe_bridge_entitlements.client import EntitlementsClient, TierFile

from .town import Refused, Town

NAMES = ("Ada", "Grace", "Linus", "Margaret")


async def visit(nats_url: str, customer: str, tiers: Path, upgrade_wait: float) -> None:
    """Fill the town, run a session, and (waiting for an upgrade) try again."""
    # A product reads the tier file the entitlements function publishes (omit tier_file);
    # here it is the example's own, so the town runs without that function.
    tier_file = TierFile.model_validate(yaml.safe_load(tiers.read_text()))
    client = await EntitlementsClient.connect(nats_url, tier_file=tier_file)
    try:
        town = await Town.open(client, customer)
        refused: list[str] = []
        for name in NAMES:
            try:
                town.add_citizen(name)
                print(f"{name} moved in")
            except Refused as why:
                print(f"{name} cannot move in: {why}")
                refused.append(name)
        try:
            session = await town.run_session(NAMES[0])
            print(f"{session.agent}'s session {session.id}: {session.tokens} tokens")
        except Refused as why:
            print(f"{NAMES[0]}'s session was refused: {why}")
        if refused and upgrade_wait > 0:
            print(f"waiting up to {upgrade_wait:g} s for {customer} to be on Teams...")
            if await client.wait_for_tier(customer, "teams", upgrade_wait):
                try:
                    town.add_citizen(refused[0])
                    town.share_memory()
                    print(f"Teams: {refused[0]} moved in, memory is shared")
                except Refused as why:
                    print(f"still refused on Teams: {why}")
    finally:
        await client.close()


def main() -> None:
    """Parse the command line and visit the town."""
    parser = argparse.ArgumentParser(prog="python -m examples.agent_town")
    parser.add_argument("--nats-url", default="nats://127.0.0.1:4222")
    parser.add_argument("--customer", default="cus_AgentTownDemo")
    parser.add_argument("--tiers-file", type=Path, default=Path(__file__).with_name("tiers.yaml"))
    parser.add_argument("--wait-for-upgrade", type=float, default=0, metavar="SECONDS")
    args = parser.parse_args()
    asyncio.run(visit(args.nats_url, args.customer, args.tiers_file, args.wait_for_upgrade))


if __name__ == "__main__":
    main()
