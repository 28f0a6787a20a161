"""The in-process entitlements client: checks answered from memory, kept current by KV watches.

For each customer it serves (``await client.serve(customer)``) it watches the customer's tier
(``BILLING_TIERS``), counts (``BILLING_USAGE_*``) and reservation ledgers
(``BILLING_RESERVATIONS``), and the tier file the entitlements function runs with
(``BILLING_LIMITS``). ``check`` reads only memory; ``reserve`` is exact by compare-and-set on
the same ledger as ``POST /v1/check``; ``record_usage`` publishes to the USAGE stream with
the reservation id as the record id and hands the reservation over to that usage.

While NATS is unreachable, answers come from memory as long as ``staleness`` is within
``unavailable_after``; beyond it they follow the tier's ``when_unavailable``
(``degraded=True``). A reservation retries NATS trouble for as long (``Patience``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from . import cas
from .keys import TIERS_BUCKET, USAGE_SUBJECT_PREFIX, count_key_at, customer_token, usage_bucket
from .patience import Patience, Unavailable
from .reservations import (
    LIMITS_BUCKET,
    MADE,
    MAX_RESERVATION_TTL,
    RESERVATIONS_BUCKET,
    TIER_FILE_KEY,
    Cached,
    CountView,
    Ledger,
    Reservations,
    ledger_key,
    parse_ledger,
    remaining,
)
from .windows import Window, window_start

_NO_COUNT = CountView()
#: Watches followed again at once after a reconnect (each is a consumer to create).
RECOVERY_CONCURRENCY = 32
_NO_LEDGER = Ledger()


class TierView(BaseModel):
    """One tier of the tier file, as far as a check reads it."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    name: str
    limits: dict[str, float | None] = Field(default_factory=dict)
    features: dict[str, str | bool | int] = Field(default_factory=dict)
    when_unavailable: str = "deny"


class TierFile(BaseModel):
    """The tier file the entitlements function runs with (``BILLING_LIMITS``, key ``tiers``)."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    tiers: list[TierView] = Field(min_length=1)
    meters: dict[str, Window]
    unknown_customer: str = "default_tier"

    def tier(self, name: str | None) -> TierView | None:
        """Tier ``name``; a customer never projected (None) gets the first tier or none."""
        if name is None:
            return None if self.unknown_customer == "deny" else self.tiers[0]
        return next((t for t in self.tiers if t.name == name), self.tiers[0])


@dataclass(slots=True)
class Decision:
    """A check's answer. ``remaining`` is None for features and unlimited meters.
    (Not frozen: a frozen dataclass costs a microsecond more per check.)"""

    allowed: bool
    remaining: float | None = None
    tier: str | None = None
    degraded: bool = False
    reason: str | None = None
    reservation_id: str | None = None


@dataclass
class ClientMetrics:
    """Counts since start; ``snapshot()`` for the application's own metrics exporter."""

    allowed: int = 0
    denied: int = 0
    degraded_allowed: int = 0
    degraded_denied: int = 0
    reservations: dict[str, int] = field(default_factory=dict)
    usage_records: int = 0
    updates: int = 0

    def count(self, decision: Decision) -> None:
        """Count one check's decision."""
        if decision.degraded:
            if decision.allowed:
                self.degraded_allowed += 1
            else:
                self.degraded_denied += 1
        elif decision.allowed:
            self.allowed += 1
        else:
            self.denied += 1

    def snapshot(self) -> dict[str, Any]:
        """Every count; checks by decision (allowed, denied, degraded_allowed, ...)."""
        checks = {
            "allowed": self.allowed,
            "denied": self.denied,
            "degraded_allowed": self.degraded_allowed,
            "degraded_denied": self.degraded_denied,
        }
        return {
            "checks": checks,
            "reservations": dict(self.reservations),
            "usage_records": self.usage_records,
            "updates": self.updates,
        }


def _outcome(decision: Decision) -> str:
    word = "allowed" if decision.allowed else "denied"
    return f"degraded_{word}" if decision.degraded else word


@dataclass
class _Customer:
    """What memory holds of one customer: its tier and its newest entry per meter."""

    tier: str | None = None
    #: meter -> (window start, entry): the newest window's entry only.
    counts: dict[str, tuple[int, CountView]] = field(default_factory=dict)
    ledgers: dict[str, tuple[int, Ledger]] = field(default_factory=dict)
    #: ledger key -> the newest entry as stored (value, revision): what ``reserve`` writes
    #: at without reading first.
    ledger_entries: dict[str, cas.Entry] = field(default_factory=dict)
    #: meter -> (valid until, remaining, tier name): what checks answer by until the next
    #: update, expiry slot or second (cleared on every update of this customer).
    remaining: dict[str, tuple[float, float, str]] = field(default_factory=dict)
    #: Set (and replaced) whenever the tier entry or the tier file changes: what
    #: ``wait_for_tier`` waits on.
    tier_changed: asyncio.Event = field(default_factory=asyncio.Event)
    #: The watches keeping this customer current; ``ready`` once all have caught up;
    #: ``forgotten`` once ``forget`` stopped them (a ``serve`` in flight then stops).
    watches: list[_Watch] = field(default_factory=list)
    ready: bool = False
    forgotten: bool = False

    def changed(self) -> None:
        """The tier or the tier file changed: forget what checks answered by, wake waiters."""
        self.remaining.clear()
        self.tier_changed.set()
        self.tier_changed = asyncio.Event()


@dataclass
class _Watch:
    """One KV watch: what it follows and how entries reach memory; restarted on reconnect."""

    kv: Any
    keys: str
    apply: Callable[[str, bytes | None, int], None]
    watcher: Any = None
    task: asyncio.Task[None] | None = None
    #: Stopped for good (its customer forgotten): a recovery in flight must not restart it.
    stopped: bool = False

    @property
    def ended(self) -> bool:
        """Its watcher stopped delivering on its own (not stopped by this client)."""
        return self.task is not None and self.task.done()


async def _stop(watch: _Watch) -> None:
    """Stop ``watch``'s watcher and its task (a dead connection may refuse the unsubscribe)."""
    if watch.task is not None:
        watch.task.cancel()
        await asyncio.gather(watch.task, return_exceptions=True)
    if watch.watcher is not None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(watch.watcher.stop(), 1)
    watch.task = watch.watcher = None


def _newest(table: dict[str, tuple[int, Any]], meter: str, key: str, value: Any) -> None:
    """Keep ``value`` under ``meter`` unless memory holds a newer window's entry."""
    held = table.get(meter)
    start = _start(key)
    if held is None or start >= held[0]:
        table[meter] = (start, value)


def _store(state: _Customer, key: str, entry: cas.Entry) -> None:
    """Keep ``entry`` of ledger ``key`` unless memory holds a newer revision (a reservation's
    own write can arrive before the watch delivers an older one)."""
    held = state.ledger_entries.get(key)
    if held is None or (entry.revision or 0) > (held.revision or 0):
        state.ledger_entries[key] = entry


def _views(state: _Customer, meter: str, start: int) -> tuple[CountView, Ledger]:
    """Memory's count and ledger of ``meter`` in the window starting at ``start`` (an
    older window's entries count as nothing: that window is over)."""
    count = state.counts.get(meter)
    ledger = state.ledgers.get(meter)
    count_now = count[1] if count is not None and count[0] == start else _NO_COUNT
    ledger_now = ledger[1] if ledger is not None and ledger[0] == start else _NO_LEDGER
    return count_now, ledger_now


def _start(key: str) -> int:
    last = key.rsplit(".", 1)[-1]
    return int(last) if last.isdigit() else 0


class EntitlementsClient:
    """Checks from memory for the customers it serves. Create with ``connect``."""

    def __init__(
        self,
        nc: Any,
        *,
        tier_file: TierFile | None = None,
        reservation_ttl: float = 300,
        unavailable_after: float = 10,
        nats_timeout: float = 0.5,
        watch_expiry: float = 30,
    ) -> None:
        if not 0 < reservation_ttl <= MAX_RESERVATION_TTL:
            # Beyond it a hold would outlive its take-back marker (the bucket's max age).
            raise ValueError(
                f"reservation_ttl must be in (0, {MAX_RESERVATION_TTL}] s, not {reservation_ttl}"
            )
        self.nc = nc
        self.js = nc.jetstream(timeout=nats_timeout)
        self.tier_file = tier_file
        self.reservation_ttl = reservation_ttl
        self.unavailable_after = unavailable_after
        self.patience = Patience(unavailable_after, nats_timeout * 4)
        #: Seconds a watch's consumer outlives its watcher on the server (nats-py's default
        #: is 5 minutes): a forgotten customer's six consumers go soon after it.
        self.watch_expiry = watch_expiry
        self.metrics = ClientMetrics()
        self._customers: dict[str, _Customer] = {}
        self._buckets: dict[str, Any] = {}
        self._watches: list[_Watch] = []
        self._recovery: asyncio.Task[None] | None = None
        self._lost_at: float | None = None
        self._starts: tuple[int, dict[Window, int]] = (-1, {})

    @classmethod
    async def connect(cls, servers: str | list[str], **options: Any) -> EntitlementsClient:
        """Connect to NATS (nats-py ``connect`` options: user, password, inbox_prefix...)
        and start; ``tier_file``, ``reservation_ttl``, ``unavailable_after``,
        ``nats_timeout`` and ``watch_expiry`` go to the client."""
        import nats

        own = {
            k: options.pop(k)
            for k in (
                "tier_file",
                "reservation_ttl",
                "unavailable_after",
                "nats_timeout",
                "watch_expiry",
            )
            if k in options
        }
        holder: list[EntitlementsClient] = []

        async def lost() -> None:
            if holder:
                await holder[0].disconnected()

        async def back() -> None:
            if holder:
                await holder[0].reconnected()

        async def quiet(_exc: Exception) -> None:
            return None  # staleness says it; nats-py would log every reconnect attempt

        options.setdefault("max_reconnect_attempts", -1)
        options.setdefault("reconnect_time_wait", 0.5)
        options.setdefault("error_cb", quiet)
        nc = await nats.connect(
            servers, disconnected_cb=lost, reconnected_cb=back, closed_cb=lost, **options
        )
        client = cls(nc, **own)
        holder.append(client)
        await client.start()
        return client

    async def disconnected(self) -> None:
        """The connection was lost (its ``disconnected_cb``/``closed_cb``): memory is no
        longer kept current. A host that owns the connection forwards its callbacks here."""
        if self._lost_at is None:
            self._lost_at = time.monotonic()

    async def reconnected(self) -> None:
        """The connection is back (its ``reconnected_cb``): watch everything again."""
        if self._recovery is not None:
            self._recovery.cancel()
        self._recovery = asyncio.create_task(self._recover())

    @property
    def staleness(self) -> float:
        """Seconds since memory stopped being kept current (0 while connected)."""
        return 0.0 if self._lost_at is None else time.monotonic() - self._lost_at

    async def start(self, buckets: dict[str, Any] | None = None) -> None:
        """Bind the buckets and watch the tier file (when not given one). ``buckets``: the
        ones a host bound already, by name (not looked up again)."""
        self._buckets |= buckets or {}
        names = [TIERS_BUCKET, RESERVATIONS_BUCKET, LIMITS_BUCKET]
        names += [usage_bucket(w) for w in Window]
        for name in (n for n in names if n not in self._buckets):
            with contextlib.suppress(Exception):  # not there yet: watched once it is
                self._buckets[name] = await self.js.key_value(name)
        if self.tier_file is None and LIMITS_BUCKET in self._buckets:
            await self._watch(self._buckets[LIMITS_BUCKET], TIER_FILE_KEY, self._tier_file)

    def _tier_file(self, _key: str, value: bytes | None, _revision: int) -> None:
        if value is not None:
            self.tier_file = TierFile.model_validate_json(value)
            for state in self._customers.values():
                state.changed()

    async def serve(self, customer: str) -> None:
        """Keep ``customer``'s tier, counts and ledgers in memory from now on (returns once
        memory holds what KV holds). Serving a customer twice changes nothing."""
        if customer in self._customers:
            return
        state = self._customers[customer] = _Customer()
        try:
            await self._serve(customer, state)
        except BaseException:
            if self._customers.get(customer) is state:
                await self.forget(customer)  # served again from scratch by the next call
            raise
        state.ready = True

    async def _serve(self, customer: str, state: _Customer) -> None:
        token = customer_token(customer)

        def tier(_key: str, value: bytes | None, _revision: int) -> None:
            state.tier = None if value is None else str(json.loads(value)["tier"])
            state.changed()

        def count(key: str, value: bytes | None, _revision: int) -> None:
            view = _NO_COUNT if value is None else CountView.model_validate_json(value)
            _newest(state.counts, key.split(".")[1], key, view)
            state.remaining.clear()

        def ledger(key: str, value: bytes | None, revision: int) -> None:
            view = parse_ledger(value)
            _newest(state.ledgers, key.split(".")[2], key, view)
            _store(state, key, cas.Entry(value, revision))
            state.remaining.clear()

        watched: list[tuple[str, str, Callable[[str, bytes | None, int], None]]]
        watched = [(TIERS_BUCKET, customer, tier)]
        watched += [(usage_bucket(w), f"{token}.>", count) for w in Window]
        watched += [(RESERVATIONS_BUCKET, f"L.{token}.>", ledger)]
        for bucket, keys, apply in watched:
            if bucket in self._buckets and not state.forgotten:
                await self._watch(self._buckets[bucket], keys, apply, state.watches)

    async def forget(self, customer: str) -> None:
        """Stop keeping ``customer`` in memory (stop its watches); ``serve`` starts again.
        Forgetting a customer not served changes nothing."""
        state = self._customers.pop(customer, None)
        if state is None:
            return
        state.forgotten = True
        for watch in state.watches:
            watch.stopped = True
            await _stop(watch)

    def position(
        self, customer: str, meter: str, start: int
    ) -> tuple[str | None, CountView, Ledger] | None:
        """Memory's tier name (None: never projected), count and ledger of ``customer``'s
        ``meter`` in the window starting at ``start`` (0 for ``total``), while every watch
        of the customer keeps them current; None while not (not served or still catching
        up, the connection lost and not yet watched again, a watch ended)."""
        state = self._customers.get(customer)
        if state is None or not state.ready or self._lost_at is not None:
            return None
        if not self.nc.is_connected or any(w.ended for w in state.watches):
            return None
        count, ledger = _views(state, meter, start)
        return state.tier, count, ledger

    def broken(self, customer: str) -> bool:
        """A watch of served ``customer`` ended while the connection is current (its
        consumer deleted, its watcher stopped): ``forget`` and ``serve`` it again."""
        state = self._customers.get(customer)
        if state is None or not state.ready or self._lost_at is not None:
            return False
        return any(w.ended for w in state.watches)

    async def _watch(
        self,
        kv: Any,
        keys: str,
        apply: Callable[[str, bytes | None, int], None],
        into: list[_Watch] | None = None,
    ) -> None:
        """Apply every entry under ``keys`` now and as it changes; return once caught up.
        The watch is kept in ``into`` (a customer's), else among the client's own."""
        watch = _Watch(kv, keys, apply)
        (self._watches if into is None else into).append(watch)
        await self._follow(watch)

    def _all_watches(self) -> list[_Watch]:
        """The client's own watches and every served customer's."""
        customers = [w for state in self._customers.values() for w in state.watches]
        return self._watches + customers

    async def _follow(self, watch: _Watch) -> None:
        """Start ``watch``'s watcher; return once the entries it holds are applied."""
        watcher = await watch.kv.watch(watch.keys, inactive_threshold=self.watch_expiry)
        if watch.stopped:  # forgotten while this watcher was being created
            with contextlib.suppress(Exception):
                await watcher.stop()
            return
        caught_up = asyncio.Event()

        async def follow() -> None:
            async for entry in watcher:
                if entry is None:  # the initial values are all delivered
                    caught_up.set()
                    continue
                deleted = entry.operation in ("DEL", "PURGE")
                watch.apply(entry.key, None if deleted else entry.value, entry.revision)
                self.metrics.updates += 1

        watch.watcher, watch.task = watcher, asyncio.create_task(follow())
        # Caught up, or the follow ended first: stopped (its customer forgotten meanwhile,
        # done: nothing left to catch up for) or its watcher ended on its own (an error).
        waiting = asyncio.ensure_future(caught_up.wait())
        try:
            await asyncio.wait(
                [waiting, watch.task],
                timeout=self.patience.attempt_timeout * 10,
                return_when=asyncio.FIRST_COMPLETED,
            )
        finally:
            waiting.cancel()
        if caught_up.is_set() or watch.stopped:
            return
        if watch.task.done():
            raise RuntimeError(f"the watch of {watch.keys} ended before catching up")
        raise TimeoutError(f"the watch of {watch.keys} did not catch up")

    async def _recover(self) -> None:
        """After a reconnect: watch everything again (a restarted server lost the watches'
        consumers, which nats-py notices only after missed heartbeats, ~20 s) and only
        then report memory current again. Until that works, again with backoff: the
        server reconnected to may have no JetStream quorum yet, and no further reconnect
        need come (the client stayed stale for good, answering by ``when_unavailable``).
        A retry follows again only the watches that failed (one customer's trouble does not
        restart everyone's), never a stopped one (forgotten meanwhile, e.g. evicted), and
        at most ``RECOVERY_CONCURRENCY`` at once (thousands of watches must not open
        thousands of consumers in one burst)."""
        delay = 0.1
        pending = self._all_watches()
        bound = asyncio.Semaphore(RECOVERY_CONCURRENCY)

        async def again(watch: _Watch) -> None:
            async with bound:
                await _stop(watch)
                if not watch.stopped:
                    await self._follow(watch)

        while not self.nc.is_closed:
            pending = [watch for watch in pending if not watch.stopped]
            # Every follow ends before the next attempt stops the watches (one that
            # started after the stop would keep a second watcher on its key).
            followed = await asyncio.gather(
                *(again(watch) for watch in pending), return_exceptions=True
            )
            pending = [
                watch
                for watch, result in zip(pending, followed, strict=True)
                if isinstance(result, BaseException)
            ]
            if pending:  # still stale, and says so
                await asyncio.sleep(delay)  # backoff, not synchronisation
                delay = min(delay * 2, 2.0)
                continue
            if self.nc.is_connected:
                self._lost_at = None
            return

    async def wait_for_tier(self, customer: str, tier: str, timeout: float) -> bool:
        """Wait until checks of ``customer`` answer with ``tier`` (e.g. after a checkout,
        until the upgrade reaches memory), at most ``timeout`` seconds; False if it did not."""
        state = self._customers.get(customer)
        if state is None:
            raise KeyError(f"customer {customer!r} is not served: await serve() first")
        deadline = time.monotonic() + timeout
        while self._tier_name(state) != tier:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(state.tier_changed.wait(), left)
        return True

    def _tier_name(self, state: _Customer) -> str | None:
        found = self.tier_file.tier(state.tier) if self.tier_file is not None else None
        return None if found is None else found.name

    def _window_start(self, window: Window) -> int:
        """Window starts, recomputed once a second (checks must stay microseconds)."""
        second = int(time.time())
        if self._starts[0] != second:
            now = datetime.now(UTC)
            self._starts = (second, {w: window_start(w, now) for w in Window})
        return self._starts[1][window]

    def check(self, customer: str, name: str, quantity: float = 1) -> Decision:
        """May ``customer`` use ``quantity`` of meter ``name``, or feature ``name`` (truthy)?
        From memory; ``customer`` must be served. Holds nothing (see ``reserve``)."""
        state = self._customers.get(customer)
        if state is None:
            raise KeyError(f"customer {customer!r} is not served: await serve() first")
        known = state.remaining.get(name)
        # The hot path: nothing changed since this meter was last worked out.
        if known is not None and self._lost_at is None and time.time() < known[0]:
            left = known[1]
            if quantity <= left:
                self.metrics.allowed += 1
                return Decision(True, left, known[2])
            self.metrics.denied += 1
            return Decision(False, left, known[2])
        decision = self._check(state, name, quantity)
        self.metrics.count(decision)
        return decision

    def _check(self, state: _Customer, name: str, quantity: float) -> Decision:
        tier_file = self.tier_file
        if tier_file is None:
            return Decision(allowed=False, degraded=True, reason="no_tier_file")
        tier = tier_file.tier(state.tier)
        if tier is None:
            return Decision(allowed=False, reason="unknown_customer")
        if self._lost_at is not None and self.staleness > self.unavailable_after:
            allowed = tier.when_unavailable == "allow"
            return Decision(allowed, tier=tier.name, degraded=True, reason="nats_unavailable")
        window = tier_file.meters.get(name)
        if window is None:
            if name not in tier.features:
                return Decision(allowed=False, tier=tier.name, reason="unknown_name")
            return Decision(allowed=bool(tier.features[name]), tier=tier.name)
        limit = tier.limits.get(name)
        if limit is None:
            return Decision(allowed=True, tier=tier.name)
        now = time.time()
        count_now, ledger_now = _views(state, name, self._window_start(window))
        left = remaining(limit, count_now, ledger_now, now) or 0.0
        # Valid until the next second (a window may start) or the next hold expires.
        until = min([int(now) + 1.0, *(s for s in ledger_now.held if s > now)])
        state.remaining[name] = (until, left, tier.name)
        return Decision(allowed=quantity <= left, remaining=left, tier=tier.name)

    def _where(self, customer: str, meter: str) -> tuple[Any, str, float | None, TierView]:
        """Count bucket, count key, limit and tier of ``customer``'s ``meter`` now."""
        state = self._customers.get(customer)
        if state is None:
            raise KeyError(f"customer {customer!r} is not served: await serve() first")
        if self.tier_file is None or meter not in self.tier_file.meters:
            raise KeyError(f"meter {meter!r} is not in the tier file")
        window = self.tier_file.meters[meter]
        tier = self.tier_file.tier(state.tier) or self.tier_file.tiers[0]
        key = count_key_at(customer, meter, window, self._window_start(window))
        return self._buckets[usage_bucket(window)], key, tier.limits.get(meter), tier

    def _cached(self, customer: str, meter: str, key: str) -> Cached | None:
        """Memory's ledger and count of ``key`` while the watches keep them current (a
        reservation then writes without reading first); None while they do not."""
        if self._lost_at is not None:
            return None
        state = self._customers[customer]
        view, _ = _views(state, meter, _start(key))
        return Cached(state.ledger_entries.get(ledger_key(key), cas.Entry()), view)

    def _reservations(self) -> Reservations:
        return Reservations(self._buckets[RESERVATIONS_BUCKET], self.reservation_ttl)

    async def reserve(
        self, customer: str, meter: str, quantity: float = 1, reservation_id: str | None = None
    ) -> Decision:
        """Hold ``quantity`` if it fits, exactly (compare-and-set on the ledger in KV); the
        same id asked again holds nothing more. Record the usage with the reservation id
        (``record_usage``) or ``release`` it; unused, it expires after ``reservation_ttl``.
        Without ``reservation_id`` the id is made here and carries what it holds: one KV
        write (ids starting with ``~`` are such ids, never a caller's: ValueError)."""
        if reservation_id is not None and reservation_id.startswith(MADE):
            raise ValueError(f"reservation ids starting with {MADE!r} are made by reserve")
        counts, key, limit, tier = self._where(customer, meter)
        ledger = self._reservations()
        rid = reservation_id or ledger.make_id(key, quantity)
        cached = self._cached(customer, meter, key)
        try:
            if self.staleness > self.unavailable_after and not self.nc.is_connected:
                # Lost long ago: no second wait. Still a suspension point, so that a
                # caller's loop of reservations cannot starve the reconnect. (Connected but
                # still watching again: KV answers, so ask it.)
                await asyncio.sleep(0)
                raise Unavailable("disconnected")
            standing = await self.patience.run(
                lambda: ledger.reserve(
                    counts, key, limit, quantity, rid, reservation_id is None, cached
                )
            )
        except Unavailable:
            allowed = tier.when_unavailable == "allow"
            decision = Decision(allowed, tier=tier.name, degraded=True, reason="nats_unavailable")
        except cas.Contention:
            decision = Decision(allowed=False, tier=tier.name, reason="contention")
        else:
            decision = Decision(
                allowed=standing.allowed,
                remaining=standing.remaining,
                tier=tier.name,
                reservation_id=standing.reservation_id if standing.allowed else None,
            )
        if cached is not None:
            _store(self._customers[customer], ledger_key(key), cached.ledger)
        outcome = _outcome(decision)
        self.metrics.reservations[outcome] = self.metrics.reservations.get(outcome, 0) + 1
        return decision

    async def release(self, customer: str, meter: str, reservation_id: str) -> bool:
        """Free what ``reservation_id`` holds; False if it holds nothing."""
        return await self._settle(customer, meter, reservation_id, None)

    async def _settle(
        self, customer: str, meter: str, reservation_id: str, seq: int | None
    ) -> bool:
        """Release (``seq`` None) or consume ``reservation_id``: by its own marker if this
        client made it, else by its hold key (a caller's id, or one made before made ids)."""
        counts, key, _, _ = self._where(customer, meter)
        ledger = self._reservations()

        async def settle() -> bool:
            made = await ledger.settle_made(counts, key, reservation_id, seq)
            if made is not None:
                return made
            if seq is None:
                return await ledger.release(counts, key, reservation_id)
            return await ledger.consume(counts, key, reservation_id, seq)

        return await self.patience.run(settle)

    async def record_usage(
        self,
        customer: str,
        meter: str,
        value: float,
        reservation_id: str | None = None,
        record_id: str | None = None,
        *,
        agent_id: str | None = None,
        session_id: str | None = None,
    ) -> int:
        """Publish one usage record to the USAGE stream (id: the reservation id, else
        ``record_id``, else new; retrying with the same id is safe) and hand the
        reservation over to it. ``agent_id`` and ``session_id`` go into the event's data,
        where OpenMeter meters group by them. Returns the record's stream sequence."""
        rid = reservation_id or record_id or str(uuid.uuid4())
        data: dict[str, Any] = {"value": value}
        if session_id is not None:
            data["session_id"] = session_id
        if agent_id is not None:
            data["agent_id"] = agent_id
        event = {
            "specversion": "1.0",
            "id": rid,
            "source": "stripe-bridge",
            "type": meter,
            "subject": customer,
            "time": datetime.now(UTC).isoformat(),
            "datacontenttype": "application/json",
            "data": data,
        }
        headers = {"Content-Type": "application/cloudevents+json", "Nats-Msg-Id": rid}
        body = json.dumps(event).encode()
        subject = f"{USAGE_SUBJECT_PREFIX}.{meter}"
        ack = await self.patience.run(lambda: self.js.publish(subject, body, headers=headers))
        self.metrics.usage_records += 1
        if reservation_id is not None:
            await self._settle(customer, meter, reservation_id, ack.seq)
        return int(ack.seq)

    async def close(self) -> None:
        """Stop watching and close the connection."""
        if self._recovery is not None:
            self._recovery.cancel()
        for watch in self._all_watches():
            await _stop(watch)
        # A reconnect loop without end survives close() when NATS is down (nats-py): end it.
        self.nc.options["max_reconnect_attempts"] = 1
        if not self.nc.is_closed:
            await self.nc.close()
