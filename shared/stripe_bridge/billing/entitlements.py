"""The entitlements function: what a customer may do, and checks that enforce the limits.

- ``GET /v1/customers/{id}/entitlements``: tier, features, and per meter the limit, usage
  so far (counted by ``count-usage``), reservations, what remains and when it resets;
- ``POST /v1/check`` ``{customer, meter, quantity, reserve?, reservation_id?}``: allow or
  deny with ``remaining`` and ``reset_at``. With ``reserve`` an allowed quantity is held
  in the count's reservation ledger by compare-and-set (``stripe_bridge_entitlements``),
  so checks racing for the last units are never allowed beyond the limit; the caller then
  records the usage with the reservation id as the usage record's id (unused
  reservations expire after ``ENTITLEMENTS_RESERVATION_TTL`` seconds);
- ``POST /v1/release`` ``{customer, meter, reservation_id}``: free a reservation not used.

Non-reserving checks and the view of a customer answered twice within a minute come from
memory: the function keeps those customers watched (``watched.WatchedCustomers``, the
in-process client's machinery, at most ``ENTITLEMENTS_WATCHED_CUSTOMERS``) and reads KV only
for a customer's first two answers, or while memory is not current (the connection lost and not yet
watched again, a watch ended). Reserving checks always compare-and-set in KV.

A customer the tier projector never saw gets the first tier's limits (``known: false``),
or is denied when the tier file says ``unknown_customer: deny``. When NATS cannot be
reached, ``/v1/check`` answers 200 with ``degraded: true`` and ``allowed`` as the
customer's tier says (``when_unavailable: allow|deny``; the tier last seen for that
customer by this process, else the first tier); the entitlements view answers 503.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import re
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from cachetools import LRUCache
from prometheus_client import Counter
from pydantic import AliasChoices, BaseModel, ConfigDict, Field
from stripe_bridge_entitlements.cas import Contention
from stripe_bridge_entitlements.client import EntitlementsClient, TierFile
from stripe_bridge_entitlements.keys import usage_bucket
from stripe_bridge_entitlements.patience import Patience, Unavailable
from stripe_bridge_entitlements.reservations import (
    MAX_RESERVATION_TTL,
    RESERVATIONS_BUCKET,
    CountView,
    Ledger,
    Reservations,
    Standing,
    decide,
    publish_tier_file,
    reservations_bucket,
)

from ..asgi import HttpRequest
from ..config import ConfigError, EnvModel, Settings, load_model
from ..http import Reply
from ..jetstream import connect_options, import_nats
from ..reasons import Reason, Refused
from .endpoints import BillingEndpoint, BillingRuntime, Refusal, parse, read_json
from .limits import UnknownCustomer, WhenUnavailable, Window, reset_at, window_start
from .projector import read_state
from .tiers import TIERS_BUCKET, CustomerState, TierConfig, TierDefinition
from .usage_counter import count_key, usage_buckets
from .watched import WatchedCustomers, WatchMetrics

log = logging.getLogger(__name__)

CUSTOMER_PATH = re.compile(r"/v1/customers/([^/]{1,255})/entitlements")
CHECK_PATH = "/v1/check"
RELEASE_PATH = "/v1/release"
CHECK_MAX_BYTES = 16 * 1024
T = TypeVar("T")


class EntitlementSettings(EnvModel):
    """Settings of the entitlements function on top of the bridge's NATS settings."""

    env_prefix = "ENTITLEMENTS_"

    tiers_file: Path | None = Field(
        default=None,
        validation_alias=AliasChoices("BILLING_TIERS_FILE", "ENTITLEMENTS_TIERS_FILE"),
        description="Tier file (limits, features); default: the built-in tiers.",
    )
    reservation_ttl: float = Field(default=300, gt=0, le=MAX_RESERVATION_TTL)
    nats_timeout: float = Field(default=0.5, gt=0, le=10, description="Per KV request, s.")
    unavailable_after: float = Field(
        default=10,
        ge=0,
        le=120,
        description="Seconds of retried NATS trouble before `when_unavailable` applies "
        "(a JetStream leader election takes a few seconds and is not unavailability).",
    )
    tier_cache_size: int = Field(default=100_000, ge=1)
    watched_customers: int = Field(
        # Idle watches cost the pod ~50-70 ms of CPU per second per 1,000 consumers (their
        # heartbeats; bench/README.md, "Idle watches"): 200 is ~0.06 cores at most.
        default=200,
        ge=0,
        le=100_000,
        description="Customers whose tier, counts and ledgers the function keeps in memory "
        "by KV watches (six ordered consumers each on nats-server: pods x this x 6 in "
        "all), least recently answered out; a customer is watched on its second KV answer "
        "within 60 s, and then its non-reserving checks and views read no KV. 0: every "
        "answer reads KV.",
    )


class CheckRequest(BaseModel):
    """The body of ``POST /v1/check``."""

    model_config = ConfigDict(extra="forbid")

    customer: str = Field(min_length=1, max_length=255)
    meter: str = Field(pattern=r"^[A-Za-z0-9_-]+$", max_length=64)
    quantity: float = Field(default=1, ge=0, allow_inf_nan=False)
    reserve: bool = False
    reservation_id: str | None = Field(
        default=None, min_length=1, max_length=255, pattern=r"^[A-Za-z0-9_.:-]+$"
    )


class ReleaseRequest(BaseModel):
    """The body of ``POST /v1/release``."""

    model_config = ConfigDict(extra="forbid")

    customer: str = Field(min_length=1, max_length=255)
    meter: str = Field(pattern=r"^[A-Za-z0-9_-]+$", max_length=64)
    reservation_id: str = Field(min_length=1, max_length=255, pattern=r"^[A-Za-z0-9_.:-]+$")


class NatsUnavailable(Exception):
    """NATS did not answer in time (or could not be reached)."""


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment is not None else None


@functools.lru_cache(maxsize=256)
def _window_times(window: Window, second: int) -> tuple[int, str | None]:
    """Start and reset time (ISO) of the window around Unix second ``second``: the same all
    second long (windows start on whole UTC seconds), worked out once (5% of a check's CPU)."""
    moment = datetime.fromtimestamp(second, UTC)
    return window_start(window, moment), _iso(reset_at(window, moment))


def _times(window: Window, now: datetime) -> tuple[int, str | None]:
    return _window_times(window, int(now.timestamp()))


class Entitlements:
    """The decisions, over a NATS connection opened on first use."""

    def __init__(self, config: TierConfig, settings: Settings, own: EntitlementSettings) -> None:
        self.config = config
        self.settings = settings
        self.own = own
        self._nc: Any = None
        self._kv: dict[str, Any] = {}
        self._lock = asyncio.Lock()
        self._failed_at = float("-inf")
        self.patience = Patience(own.unavailable_after, own.nats_timeout * 4)
        #: Tier names last read per customer: what a degraded answer goes by.
        self.last_tier: LRUCache[str, str] = LRUCache(maxsize=own.tier_cache_size)
        self.watch_metrics = WatchMetrics()
        #: The customers answered from memory (None until connected, or when disabled).
        self.watched: WatchedCustomers | None = None

    async def _buckets(self) -> dict[str, Any]:
        if self._nc is not None and self._nc.is_connected:
            return self._kv
        async with self._lock:
            if self._nc is not None and not self._nc.is_closed:
                if self._nc.is_connected:
                    return self._kv
                raise NatsUnavailable("reconnecting")
            if time.monotonic() - self._failed_at < 1.0:
                raise NatsUnavailable("connect failed moments ago")
            nats = import_nats(self.settings)
            options = connect_options(self.settings)
            options["max_reconnect_attempts"] = 1
            options["connect_timeout"] = min(self.settings.nats_connect_timeout, 2.0)

            async def quiet(_exc: Exception) -> None:
                return None

            # Memory stops being current the moment the connection is lost (the watches'
            # client is told, as its own connection would tell it). Bound to this
            # connection's watched customers: a connection's callbacks never act on a later
            # connection's watches.
            mine: list[WatchedCustomers] = []

            async def lost() -> None:
                for watched in mine:
                    await watched.client.disconnected()

            async def back() -> None:
                for watched in mine:
                    await watched.client.reconnected()

            callbacks = {"disconnected_cb": lost, "closed_cb": lost, "reconnected_cb": back}
            tier_file = self.config.model_dump_json().encode()
            nc = None
            try:
                nc = await nats.connect(error_cb=quiet, **callbacks, **options)
                js = nc.jetstream(timeout=self.own.nats_timeout)
                windows = await usage_buckets(js)
                tiers = await self._tiers_bucket(js)
                reservations = await reservations_bucket(js)
                # The in-process clients read the limits from here (docs/entitlements.md).
                await publish_tier_file(js, tier_file)
                buckets = {usage_bucket(w): kv for w, kv in windows.items()}
                buckets[RESERVATIONS_BUCKET] = reservations
                if tiers is not None:
                    buckets[TIERS_BUCKET] = tiers
                self.watched = await self._watched(nc, TierFile.model_validate_json(tier_file))
                if self.watched is not None:
                    mine.append(self.watched)
                    await self.watched.client.start(buckets)
            except Exception as exc:
                self._failed_at = time.monotonic()
                if self.watched is not None:  # closes its connection too
                    await self.watched.close()
                    self.watched = None
                if nc is not None:  # connected, then refused: not left open (or reconnecting)
                    with contextlib.suppress(Exception):
                        await nc.close()
                raise NatsUnavailable(type(exc).__name__) from exc
            nc.options["max_reconnect_attempts"] = -1
            self._nc = nc
            self._kv = {w.value: kv for w, kv in windows.items()} | {
                TIERS_BUCKET: tiers,
                RESERVATIONS_BUCKET: reservations,
            }
            return self._kv

    async def _watched(self, nc: Any, tier_file: TierFile) -> WatchedCustomers | None:
        """The watched customers on connection ``nc`` (None when none are to be)."""
        if self.watched is not None:  # a connection before this one: its watches go
            await self.watched.close()
        if self.own.watched_customers == 0:
            return None
        client = EntitlementsClient(
            nc,
            tier_file=tier_file,
            reservation_ttl=self.own.reservation_ttl,
            unavailable_after=self.own.unavailable_after,
            nats_timeout=self.own.nats_timeout,
        )
        return WatchedCustomers(client, self.own.watched_customers, self.watch_metrics)

    @staticmethod
    async def _tiers_bucket(js: Any) -> Any:
        from nats.js.errors import BucketNotFoundError

        try:
            return await js.key_value(TIERS_BUCKET)
        except BucketNotFoundError:
            return None  # the projector never ran: every customer is unknown

    async def _retrying(self, work: Callable[[dict[str, Any]], Awaitable[T]]) -> T:
        """``work(buckets)``, retried while NATS is in trouble for at most
        ``unavailable_after`` seconds (``Patience``); then NatsUnavailable."""

        async def attempt() -> T:
            return await work(await self._buckets())

        try:
            return await self.patience.run(attempt, also=(NatsUnavailable,))
        except Unavailable as exc:
            raise NatsUnavailable(str(exc)) from exc

    async def _tier_name(self, customer: str) -> str | None:
        """The customer's tier name in KV (None: the projector never saw it)."""

        async def read(kv: dict[str, Any]) -> CustomerState | None:
            tiers = kv[TIERS_BUCKET]
            return None if tiers is None else (await read_state(tiers, customer))[0]

        state = await self._retrying(read)
        return None if state is None else state.tier

    async def tier_of(self, customer: str) -> tuple[TierDefinition | None, bool]:
        """(tier, known): the customer's tier; None when unknown customers are denied."""
        return self._tier(customer, await self._tier_name(customer))

    def _tier(self, customer: str, name: str | None) -> tuple[TierDefinition | None, bool]:
        """(tier, known) of tier name ``name`` (None: never projected)."""
        if name is not None:
            self.last_tier[customer] = name
            return self.config.get(name) or self.config.tiers[0], True
        if self.config.unknown_customer is UnknownCustomer.DENY:
            return None, False
        return self.config.tiers[0], False

    def _remembered(
        self, customer: str, meter: str, window: Window, now: datetime
    ) -> tuple[str | None, CountView, Ledger] | None:
        """Tier name, count and ledger from memory, or None when memory cannot answer."""
        if self.watched is None:
            return None
        return self.watched.position(customer, meter, _times(window, now)[0])

    async def _read(
        self, customer: str, window: Window, key: str
    ) -> tuple[str | None, CountView, Ledger]:
        """Tier name, count and ledger from KV (one round trip: the count's key does not
        depend on the tier); a customer's second such read within a minute has it watched."""

        async def position(kv: dict[str, Any]) -> tuple[CountView, Ledger]:
            return await self._ledger(kv).position(kv[window.value], key)

        reading = asyncio.ensure_future(self._retrying(position))
        try:
            name = await self._tier_name(customer)
            if name is None and self.config.unknown_customer is UnknownCustomer.DENY:
                return None, CountView(), Ledger()  # denied whatever the count (or its read)
            count, ledger = await reading
        finally:
            # No read outlives the answer, and none fails unretrieved.
            if not reading.cancel() and not reading.cancelled():
                reading.exception()
        if self.watched is not None:
            self.watched.watch(customer)
        return name, count, ledger

    async def _position(
        self, customer: str, meter: str, window: Window, now: datetime
    ) -> tuple[str | None, CountView, Ledger]:
        """Tier name, count and ledger: from memory when it can answer, else from KV."""
        found = self._remembered(customer, meter, window, now)
        self.watch_metrics.answered(found is not None)
        if found is not None:
            return found
        return await self._read(customer, window, count_key(customer, meter, window, now))

    def _window(self, meter: str) -> Window:
        window = self.config.meters.get(meter)
        if window is None:
            raise Refusal(422, "unknown_meter", f"meter {meter!r} is not in the tier file")
        return window

    async def check(self, request: CheckRequest) -> dict[str, Any]:
        """Allow or deny ``request``, reserving the quantity when asked and allowed."""
        window = self._window(request.meter)
        base: dict[str, Any] = {
            "customer": request.customer,
            "meter": request.meter,
            "quantity": request.quantity,
            "degraded": False,
        }
        now = datetime.now(UTC)
        if request.reserve:
            tier, known = await self.tier_of(request.customer)
        else:
            # Nothing to hold: memory's tier, count and ledger, else KV's.
            name, count, ledger = await self._position(request.customer, request.meter, window, now)
            tier, known = self._tier(request.customer, name)
        if tier is None:
            return {**base, "allowed": False, "reason": "unknown_customer", "known": False}
        limit = tier.limits.get(request.meter)
        base |= {"tier": tier.name, "known": known, "limit": limit}
        base["reset_at"] = _times(window, now)[1]
        if not request.reserve:
            return base | decide(limit, request.quantity, count, ledger, time.time()).model_dump()
        key = count_key(request.customer, request.meter, window, now)
        # One id for every attempt: a retried reservation finds its own hold.
        rid = request.reservation_id or str(uuid.uuid4())

        async def reserve(kv: dict[str, Any]) -> Standing:
            new_id = request.reservation_id is None
            ledger = self._ledger(kv)
            return await ledger.reserve(kv[window.value], key, limit, request.quantity, rid, new_id)

        try:
            standing = await self._retrying(reserve)
        except Contention:
            raise Refusal(503, "contention", "too many concurrent checks, retry", 1) from None
        return base | standing.model_dump()

    async def release(self, customer: str, meter: str, reservation_id: str) -> bool:
        """Free what reservation ``reservation_id`` holds; False if nothing is held."""
        window = self._window(meter)
        key = count_key(customer, meter, window, datetime.now(UTC))

        async def release(kv: dict[str, Any]) -> bool:
            return await self._ledger(kv).release(kv[window.value], key, reservation_id)

        return await self._retrying(release)

    def _ledger(self, kv: dict[str, Any]) -> Reservations:
        return Reservations(kv[RESERVATIONS_BUCKET], self.own.reservation_ttl)

    def degraded(self, request: CheckRequest) -> dict[str, Any]:
        """The answer while NATS is unreachable: the tier's ``when_unavailable``."""
        name = self.last_tier.get(request.customer)
        tier = (self.config.get(name) if name else None) or self.config.tiers[0]
        return {
            "customer": request.customer,
            "meter": request.meter,
            "quantity": request.quantity,
            "allowed": tier.when_unavailable is WhenUnavailable.ALLOW,
            "degraded": True,
            "reason": "nats_unavailable",
            "tier": tier.name,
            "remaining": None,
            "reset_at": None,
            "reservation_id": None,
        }

    async def view(self, customer: str) -> dict[str, Any]:
        """Tier, features and every meter's limit, usage, remaining and reset time."""
        now = datetime.now(UTC)
        meters = self.config.meters.items()
        found = [self._remembered(customer, meter, window, now) for meter, window in meters]
        remembered = [f for f in found if f is not None]
        from_memory = bool(remembered) and len(remembered) == len(found)
        self.watch_metrics.answered(from_memory)
        name = remembered[0][0] if from_memory else await self._tier_name(customer)
        tier, known = self._tier(customer, name)
        if tier is None:
            raise Refusal(404, "unknown_customer", "no billing events for this customer")
        if from_memory:
            positions = [(count, ledger) for _, count, ledger in remembered]
        else:
            positions = await self._retrying(
                lambda kv: asyncio.gather(  # every meter's reads at once
                    *(
                        self._ledger(kv).position(kv[w.value], count_key(customer, m, w, now))
                        for m, w in meters
                    )
                )
            )
            if self.watched is not None:
                self.watched.watch(customer)

        def one(meter: str, window: Window, count: CountView, ledger: Ledger) -> dict[str, Any]:
            limit = tier.limits.get(meter)
            standing = decide(limit, 0, count, ledger, time.time())
            return {
                "window": window.value,
                "limit": limit,
                "used": standing.used,
                "reserved": standing.reserved,
                "remaining": standing.remaining,
                "reset_at": _times(window, now)[1],
            }

        views = zip(meters, positions, strict=True)
        return {
            "customer": customer,
            "known": known,
            "tier": tier.name,
            "features": tier.features,
            "meters": {m: one(m, w, count, ledger) for (m, w), (count, ledger) in views},
        }

    async def close(self) -> None:
        """Stop the watches and close the NATS connection."""
        if self.watched is not None:
            await self.watched.close()
        if self._nc is not None and not self._nc.is_closed:
            await self._nc.close()


class EntitlementsRuntime(BillingRuntime):
    """Always ready (a degraded answer is an answer); closes NATS and pushes on SIGTERM."""

    def __init__(self, logic: Entitlements, settings: Settings) -> None:
        super().__init__("billing_entitlements", settings)
        self.logic = logic
        self.checks = Counter(
            "stripe_bridge_entitlement_checks",
            "POST /v1/check answers, by meter and decision (allowed, denied, "
            "degraded_allowed, degraded_denied).",
            ["meter", "decision"],
            registry=self.metrics.registry,
        )
        for collector in logic.watch_metrics.collectors():
            self.metrics.registry.register(collector)

    async def close(self) -> None:
        """Close the connection, then push the final metrics."""
        await self.logic.close()
        await super().close()


class EntitlementsFunction(BillingEndpoint):
    """The HTTP shell: GET for the customer view, POST for checks, 404 elsewhere."""

    #: Every check is on its caller's critical path (a line costs 10% of the function's
    #: CPU); ``stripe_bridge_entitlement_checks`` counts them, LOG_LEVEL=DEBUG shows them.
    success_level = logging.DEBUG

    async def respond(self, request: HttpRequest, path: str) -> Reply:
        """The customer view takes GET; everything else follows the shell's POST rules
        (405, 413), then ``work`` answers 404 off ``/v1/check``."""
        if CUSTOMER_PATH.fullmatch(path):
            if request.method != "GET":
                raise Refused(Reason.METHOD_NOT_ALLOWED, "use GET", {"Allow": "GET"})
            return await self.answer(request, b"")
        return await super().respond(request, path)


def make_entitlements_function(
    settings: Settings,
    own: EntitlementSettings | None = None,
    config: TierConfig | None = None,
) -> EntitlementsFunction:
    """The ``billing_entitlements`` function."""
    own = own or load_model(EntitlementSettings)
    if config is None:
        try:
            config = TierConfig.load(own.tiers_file)
        except (OSError, ValueError) as exc:
            raise ConfigError(f"tier config: {str(exc).splitlines()[0]}") from None
    logic = Entitlements(config, settings, own)
    runtime = EntitlementsRuntime(logic, settings)

    async def work(request: HttpRequest, body: bytes) -> tuple[int, Any]:
        match = CUSTOMER_PATH.fullmatch(request.path.rstrip("/"))
        if match is not None:
            try:
                return 200, await logic.view(match[1])
            except NatsUnavailable:
                raise Refusal(503, "nats_unavailable", "NATS unavailable", 1) from None
        path = request.path.rstrip("/")
        if path == RELEASE_PATH:
            release = parse(ReleaseRequest, read_json(body))
            try:
                freed = await logic.release(release.customer, release.meter, release.reservation_id)
            except NatsUnavailable:
                raise Refusal(503, "nats_unavailable", "NATS unavailable, retry", 1) from None
            except Contention:
                raise Refusal(503, "contention", "too many concurrent writers, retry", 1) from None
            return 200, {"released": freed}
        if path != CHECK_PATH:
            raise Refusal(404, "not_found", f"no such path; POST {CHECK_PATH} or {RELEASE_PATH}")
        check = parse(CheckRequest, read_json(body))
        try:
            answer = await logic.check(check)
            decision = "allowed" if answer["allowed"] else "denied"
        except NatsUnavailable as exc:
            log.warning("check degraded: nats unavailable (%s)", exc)
            answer = logic.degraded(check)
            decision = "degraded_allowed" if answer["allowed"] else "degraded_denied"
        runtime.checks.labels(check.meter, decision).inc()
        return 200, answer

    return EntitlementsFunction(runtime, work, min(CHECK_MAX_BYTES, settings.max_body_bytes))
