"""Agent Town: citizens who talk to each other, and agents who spend tokens in sessions.

Every limit and feature is asked of the in-process entitlements client
(``stripe_bridge_entitlements``, docs/entitlements.md), which answers from memory kept
current by NATS: a check costs microseconds, so the town asks on every step. What the plan
does not allow raises ``Refused`` with a reason the town's user can act on ("Free allows 3
citizens; upgrade to Teams"). Nothing here knows about Stripe: an upgrade reaches the
client's memory by itself (checkout → webhook → bridge → tier projection → KV watch).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

from stripe_bridge_entitlements.client import Decision, EntitlementsClient, TierView

#: The one tenant of a town without the ``multi_tenant`` feature.
MAIN = "main"
#: Tokens an agent is allowed to spend in one session (reserved up front, the rest freed).
SESSION_BUDGET = 2_000


class Refused(Exception):
    """The plan does not allow it; ``str(refused)`` is what to show the town's user."""


@dataclass
class Citizen:
    """Someone living in the town; ``memory`` is what it heard (and, with shared memory,
    what anyone in its tenant heard)."""

    name: str
    tenant: str = MAIN
    memory: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Session:
    """One agent's session: what it said and the tokens it was billed."""

    id: str
    agent: str
    tokens: int
    lines: tuple[str, ...]


def tokens_of(text: str) -> int:
    """A stand-in for the model's token count (about four characters a token)."""
    return 1 + len(text) // 4


class Town:
    """One customer's town. Open it with ``Town.open`` (the client then serves the customer)."""

    def __init__(self, client: EntitlementsClient, customer: str) -> None:
        self.client = client
        self.customer = customer
        self.citizens: dict[str, Citizen] = {}
        self.shared_memory = False

    @classmethod
    async def open(cls, client: EntitlementsClient, customer: str) -> Town:
        """The town of ``customer``, its entitlements in the client's memory from now on."""
        await client.serve(customer)
        return cls(client, customer)

    def add_citizen(self, name: str, tenant: str = MAIN) -> Citizen:
        """A new citizen, if the plan allows one more (and, for another tenant, several)."""
        if tenant != MAIN:
            self._require("multi_tenant")
        # The population is a number the town holds, not usage that accumulates: check it
        # against the limit (a check holds nothing; one town process owns its population).
        self._allow("citizens", len(self.citizens) + 1)
        citizen = self.citizens[name] = Citizen(name, tenant)
        return citizen

    def share_memory(self) -> None:
        """From now on everyone in a tenant remembers what anyone in it heard (Teams)."""
        self._require("shared_memory")
        self.shared_memory = True

    def talk(self, speaker: str, listener: str, text: str) -> str:
        """``speaker`` tells ``listener`` something; tenants do not hear each other."""
        said, heard = self.citizens[speaker], self.citizens[listener]
        if said.tenant != heard.tenant:
            raise ValueError(f"{speaker} and {listener} live in different tenants")
        line = f"{speaker} to {listener}: {text}"
        hearers = [c for c in self.citizens.values() if c.tenant == heard.tenant]
        for citizen in hearers if self.shared_memory else [heard]:
            citizen.memory.append(line)
        return line

    async def run_session(self, agent: str) -> Session:
        """``agent`` greets every neighbour, spending tokens: reserved before, recorded after
        (per agent and session, the reservation id as record id); its interactions and the
        session itself are recorded too."""
        citizen = self.citizens[agent]
        self._allow("sessions", 1)
        hold = await self.client.reserve(self.customer, "tokens", SESSION_BUDGET)
        if not hold.allowed:
            raise Refused(self._reason("tokens", hold))
        session_id = f"ses-{uuid.uuid4().hex}"
        try:
            lines = tuple(
                self.talk(agent, other.name, f"good morning, {other.name}")
                for other in self.citizens.values()
                if other.tenant == citizen.tenant and other.name != agent
            )
        except BaseException:
            if hold.reservation_id is not None:
                await self.client.release(self.customer, "tokens", hold.reservation_id)
            raise
        tokens = sum(tokens_of(line) for line in lines)
        ids = {"agent_id": agent, "session_id": session_id}
        # The record id is the reservation's (nothing is held on an unlimited plan: then
        # one of the session's own); a retry with the same id is never counted twice.
        await self.client.record_usage(
            self.customer,
            "tokens",
            tokens,
            reservation_id=hold.reservation_id,
            record_id=f"{session_id}.tokens",
            **ids,
        )
        await self.client.record_usage(
            self.customer,
            "citizen_interactions",
            len(lines),
            record_id=f"{session_id}.interactions",
            **ids,
        )
        await self.client.record_usage(self.customer, "sessions", 1, record_id=session_id, **ids)
        return Session(session_id, agent, tokens, lines)

    def _allow(self, meter: str, quantity: float) -> None:
        decision = self.client.check(self.customer, meter, quantity)
        if not decision.allowed:
            raise Refused(self._reason(meter, decision))

    def _require(self, feature: str) -> None:
        decision = self.client.check(self.customer, feature)
        if not decision.allowed:
            raise Refused(self._reason(feature, decision))

    def _reason(self, name: str, decision: Decision) -> str:
        """Why ``decision`` refused ``name``, and which plan would allow it."""
        tier_file = self.client.tier_file
        current = tier_file.tier(decision.tier) if tier_file is not None else None
        if decision.reason is not None or tier_file is None or current is None:
            # Not the plan's doing (NATS unreachable, no tier file...): say so, not "upgrade".
            return f"{name}: the plan cannot be checked right now ({decision.reason})"
        higher = tier_file.tiers[tier_file.tiers.index(current) + 1 :]
        limit = current.limits.get(name)
        if name in tier_file.meters:
            said = f"{_title(current)} allows {limit:g} {name}"
            better = next((t for t in higher if _more(t.limits.get(name), limit)), None)
        else:
            said = f"{name.replace('_', ' ')} is not in {_title(current)}"
            better = next((t for t in higher if t.features.get(name)), None)
        return said if better is None else f"{said}; upgrade to {_title(better)}"


def _title(tier: TierView) -> str:
    return tier.name.replace("_", " ").title()


def _more(limit: float | None, than: float | None) -> bool:
    """Is ``limit`` higher than ``than`` (None: unlimited)?"""
    return limit is None or (than is not None and limit > than)
