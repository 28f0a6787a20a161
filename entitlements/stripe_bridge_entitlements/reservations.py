"""Reservations that cost the same however many are held, exact by compare-and-set.

Per customer, meter and window (the usage count's key, ``<customer>.<meter>[.<start>]``)
the ``BILLING_RESERVATIONS`` bucket holds:

- ``L.<count key>``: the ledger, a few numbers whatever the number of reservations:
  quantities held by expiry slot (``ttl / SLOTS`` wide, so at most ``SLOTS + 1`` of them)
  and quantities recorded as usage but not yet counted, by usage stream sequence. Every
  reservation changes it by compare-and-set, so two racing for the last unit are never
  both granted; every write drops expired slots and sequences the counter has counted.
- ``H.<count key>.<reservation id>``: one reservation (quantity, slot), so that the same id
  asked again is not held twice and ``release``/``consume`` know what to take back.
- ``S.<count key>.<reservation id>``: a *made* reservation was taken back (released or
  consumed), written then and only once. A made id (``make_id``, the in-process client's
  own: ``~<slot>~<quantity>~<count key digest>~<random>``) carries what the hold key would
  say, so reserving under it is one write, the ledger's, as a raw compare-and-set loop is.
  Only ``settle_made`` (the client's ``release``/``record_usage``, trusted code that may
  write the ledger anyway) reads it; ``~`` is outside the function's id pattern, and
  ``release``/``consume`` (HTTP callers, count-usage's hand-over) trust hold keys only, so
  a forged id frees nothing.

What a customer may still use: ``limit - used - held``, where ``used`` (and the last stream
sequence counted, ``last_seq``) come from the usage counter's entry. A reservation recorded
as usage moves from its slot to ``consumed[seq]`` and stays held until the counter's
``last_seq`` reaches ``seq``: counted once, by the ledger until the counter has it, then by
``used``.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import hashlib
import math
import os
import re
import time
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from . import cas

RESERVATIONS_BUCKET = "BILLING_RESERVATIONS"
#: The longest reservation TTL, s (the function's and the in-process client's bound).
MAX_RESERVATION_TTL = 86400
#: Entries (the ``S.`` take-back markers too) outlive the longest reservation TTL plus its
#: slot and a counter that lags an hour.
BUCKET_MAX_AGE = MAX_RESERVATION_TTL + 3600
#: Expiry slots per TTL: the ledger's size bound; a hold lasts up to ttl/SLOTS longer.
SLOTS = 60
#: Quantities below this are rounding residue of float sums, not holds.
EPSILON = 1e-9
#: Reservation ids the ledger remembers (newest last): a write whose answer was lost and is
#: retried finds its own id and holds nothing twice.
RECENT = 32
_SAFE = re.compile(r"^[A-Za-z0-9_-]+$")
#: What starts a made reservation id (never a caller's: see ``make_id``).
MADE = "~"


class CountView(BaseModel):
    """The usage counter's entry, as far as a decision reads it."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    used: float = 0
    last_seq: int = 0
    #: Reservations of the format before the ledger (id -> {quantity, expires}); still
    #: honoured until they expire, so an upgrade never frees units early.
    reservations: dict[str, dict[str, float]] = Field(default_factory=dict)

    def legacy_held(self, now: float) -> float:
        """What unexpired reservations of the old format hold."""
        return sum(r["quantity"] for r in self.reservations.values() if r["expires"] > now)


def _add(table: dict[int, float], key: int, quantity: float) -> dict[int, float]:
    total = round(table.get(key, 0.0) + quantity, 9)
    rest = {k: v for k, v in table.items() if k != key}
    return rest | {key: total} if total > EPSILON else rest


class Ledger(BaseModel):
    """Held quantities of one count key, by expiry slot and by uncounted usage sequence."""

    model_config = ConfigDict(frozen=True)

    held: dict[int, float] = Field(default_factory=dict)
    consumed: dict[int, float] = Field(default_factory=dict)
    recent: dict[str, int] = Field(default_factory=dict, description="id -> slot, newest last")
    #: The highest counter ``last_seq`` a write compacted ``consumed`` by: a count read
    #: older than that no longer sees usage the ledger has dropped, so it is read again.
    counted: int = 0

    def holding(self, now: float, last_seq: int) -> float:
        """What the ledger holds at ``now`` with the counter at ``last_seq``."""
        held = sum(q for slot, q in self.held.items() if slot > now)
        return held + sum(q for seq, q in self.consumed.items() if seq > last_seq)

    def compacted(self, now: float, last_seq: int) -> Ledger:
        """Without expired slots and sequences the counter has counted."""
        return self.replaced(
            held={s: q for s, q in self.held.items() if s > now},
            consumed={s: q for s, q in self.consumed.items() if s > last_seq},
            counted=max(self.counted, last_seq),
        )

    def holding_for(self, reservation_id: str, slot: int, quantity: float) -> Ledger:
        """With ``quantity`` more held in ``slot`` for ``reservation_id``."""
        recent = dict(list({**self.recent, reservation_id: slot}.items())[-RECENT:])
        return self.replaced(held=_add(self.held, slot, quantity), recent=recent)

    def replaced(self, **fields: Any) -> Ledger:
        """A copy with ``fields`` replaced, unvalidated: callers build them from a ledger's
        own typed fields (validating them again was ~5% of a reservation's CPU)."""
        return Ledger.model_construct(**(self.__dict__ | fields))

    def encode(self) -> bytes:
        """The stored form (remembered as parsed already: ``parse_ledger``)."""
        value = self.model_dump_json().encode()
        _remember(value, self)
        return value


#: Ledgers by stored form, oldest first: a reservation decides by the ledger it wrote last
#: and the watch delivers that same write back; parsing it again each time was ~7% of a
#: reservation's CPU (py-spy). Ledgers are frozen and never changed in place: shared safely.
_PARSED: dict[bytes, Ledger] = {}
_EMPTY = Ledger()
_PARSED_MAX = 256


def _remember(value: bytes, ledger: Ledger) -> None:
    if len(_PARSED) >= _PARSED_MAX:
        del _PARSED[next(iter(_PARSED))]
    _PARSED[value] = ledger


def parse_ledger(value: bytes | None) -> Ledger:
    """The ledger stored as ``value`` (empty when None)."""
    if value is None:
        return _EMPTY
    ledger = _PARSED.get(value)
    if ledger is None:
        ledger = Ledger.model_validate_json(value)
        _remember(value, ledger)
    return ledger


class Hold(BaseModel):
    """One reservation: what it holds and in which expiry slot."""

    model_config = ConfigDict(frozen=True)

    quantity: float
    slot: int


class Standing(BaseModel):
    """A customer's position on one meter, and the decision on a quantity."""

    model_config = ConfigDict(frozen=True)

    allowed: bool
    used: float
    reserved: float
    remaining: float | None
    reservation_id: str | None = None


def _token(value: str) -> str:
    """A KV key token: ``value`` if plain, else ``=`` + base64 (ids may hold ``:`` and ``.``)."""
    if _SAFE.match(value):
        return value
    return "=" + base64.urlsafe_b64encode(value.encode()).decode().rstrip("=")


def settled_key(count_key: str, reservation_id: str) -> str:
    """Where made reservation ``reservation_id`` on ``count_key`` is marked taken back."""
    return f"S.{count_key}.{_token(reservation_id)}"


@functools.lru_cache(maxsize=1024)  # a process reserves on few keys
def _digest(count_key: str) -> str:
    """Binds a made id to its count key: against mistakes, not forgery (trusted callers)."""
    return hashlib.blake2b(count_key.encode(), digest_size=4).hexdigest()


def made_hold(count_key: str, reservation_id: str) -> Hold | None:
    """What made id ``reservation_id`` holds on ``count_key`` (None: not a made id, or made
    for another customer, meter or window)."""
    parts = reservation_id.split(MADE)
    if len(parts) != 5 or parts[0] or parts[3] != _digest(count_key):
        return None
    try:
        return Hold(quantity=float(parts[2]), slot=int(parts[1]))
    except ValueError:
        return None


def ledger_key(count_key: str) -> str:
    """Where the ledger of ``count_key`` lives."""
    return f"L.{count_key}"


def hold_key(count_key: str, reservation_id: str) -> str:
    """Where one reservation on ``count_key`` lives."""
    return f"H.{count_key}.{_token(reservation_id)}"


def _reserved(count: CountView, ledger: Ledger, now: float) -> float:
    return ledger.holding(now, count.last_seq) + count.legacy_held(now)


def _left(limit: float | None, count: CountView, reserved: float) -> float | None:
    return None if limit is None else max(0.0, limit - count.used - reserved)


def remaining(limit: float | None, count: CountView, ledger: Ledger, now: float) -> float | None:
    """What is left under ``limit`` beside usage and holds (None: no limit)."""
    return None if limit is None else _left(limit, count, _reserved(count, ledger, now))


def decide(
    limit: float | None, quantity: float, count: CountView, ledger: Ledger, now: float
) -> Standing:
    """Allow ``quantity`` if it fits under ``limit`` beside usage and holds (None: no limit)."""
    reserved = _reserved(count, ledger, now)
    left = _left(limit, count, reserved)
    allowed = left is None or quantity <= left
    return Standing(allowed=allowed, used=count.used, reserved=reserved, remaining=left)


async def reservations_bucket(js: Any, replicas: int = 1) -> Any:
    """The reservations bucket, created if missing."""
    from nats.js.api import KeyValueConfig
    from nats.js.errors import BucketNotFoundError

    try:
        return await js.key_value(RESERVATIONS_BUCKET)
    except BucketNotFoundError:
        config = KeyValueConfig(
            bucket=RESERVATIONS_BUCKET, history=1, ttl=BUCKET_MAX_AGE, replicas=replicas
        )
        return await js.create_key_value(config)


async def read_count(count_kv: Any, key: str) -> CountView:
    """The usage counter's entry at ``key`` (zero when absent)."""
    entry = await cas.read(count_kv, key)
    return CountView() if entry.value is None else CountView.model_validate_json(entry.value)


async def _current(count: CountView, ledger: Ledger, count_kv: Any, key: str) -> CountView:
    """``count``, or the counter's entry read again if ``ledger`` was compacted by a newer
    one (else usage it dropped from ``consumed`` would be in neither)."""
    if count.last_seq >= ledger.counted:
        return count
    return await read_count(count_kv, key)


@dataclass
class Cached:
    """The caller's copy of one ledger entry and its count (the in-process client's
    watches). ``reserve`` decides by it and writes at its revision without reading first
    (a stale copy costs one lost compare-and-set, then it reads), and keeps ``ledger``
    current with what it writes."""

    ledger: cas.Entry
    count: CountView

    def store(self, entry: cas.Entry) -> None:
        """The ledger as just written."""
        self.ledger = entry


class Reservations:
    """Reserve, release and consume on the ledger bucket ``kv``; holds last ``ttl`` seconds."""

    def __init__(self, kv: Any, ttl: float, attempts: int = cas.CAS_ATTEMPTS) -> None:
        self.kv = kv
        self.ttl = ttl
        self.width = max(1, math.ceil(ttl / SLOTS))
        self.attempts = attempts

    def _slot(self, now: float) -> int:
        return math.ceil((now + self.ttl) / self.width) * self.width

    def make_id(self, key: str, quantity: float) -> str:
        """A new reservation id for ``quantity`` on count key ``key`` that carries its expiry
        slot and quantity: ``reserve`` under it writes no hold key (``settle_made``)."""
        slot = self._slot(time.time())
        # 64 random bits: the ledger remembers each id (``recent``), so ids stay short.
        rand = os.urandom(8).hex()
        return f"{MADE}{slot}{MADE}{float(quantity)!r}{MADE}{_digest(key)}{MADE}{rand}"

    async def standing(
        self, count_kv: Any, key: str, limit: float | None, quantity: float
    ) -> Standing:
        """The decision on ``quantity`` without holding anything (two reads, together)."""
        count, ledger = await self.position(count_kv, key)
        return decide(limit, quantity, count, ledger, time.time())

    async def position(self, count_kv: Any, key: str) -> tuple[CountView, Ledger]:
        """The count and the ledger of ``key``, read together."""
        count, entry = await asyncio.gather(
            read_count(count_kv, key), cas.read(self.kv, ledger_key(key))
        )
        return count, parse_ledger(entry.value)

    async def reserve(
        self,
        count_kv: Any,
        key: str,
        limit: float | None,
        quantity: float,
        reservation_id: str,
        new_id: bool = False,
        cached: Cached | None = None,
    ) -> Standing:
        """Hold ``quantity`` under ``reservation_id`` if it fits (nothing is held without a
        limit). The same id asked again while held answers allowed and holds nothing more,
        also when the first answer was lost and the call is retried. ``new_id``: the id was
        made for this call, so it cannot be held already (one read less) and nobody else
        can know it: its own key is written beside the ledger, not after it, and a made id
        (``make_id``) needs none. ``cached``: decide by the caller's copy of ledger and
        count first (``Cached``)."""
        if limit is None:
            return await self.standing(count_kv, key, limit, quantity)
        rid = reservation_id
        if not new_id and (await cas.read(self.kv, hold_key(key, rid))).value is not None:
            return await self._again(count_kv, key, limit, rid)
        made = made_hold(key, rid) if new_id else None
        if made is not None and made.quantity != float(quantity):
            raise ValueError(f"reservation id {rid!r} was made for another quantity")
        slot = self._slot(time.time()) if made is None else made.slot
        hold_beside = new_id and made is None
        beside: list[asyncio.Future[Any]] = []

        async def step(
            entry: cas.Entry, count: CountView
        ) -> tuple[bytes | None, tuple[Standing, int | None]]:
            now = time.time()
            ledger = parse_ledger(entry.value)
            count = await _current(count, ledger, count_kv, key)
            if rid in ledger.recent:  # our own write, whose answer was lost
                again = decide(limit, 0, count, ledger, now)
                found = again.model_copy(update={"allowed": True, "reservation_id": rid})
                return None, (found, ledger.recent[rid])
            reserved = _reserved(count, ledger, now)
            left = _left(limit, count, reserved) or 0.0  # limit is not None here
            if quantity > left:
                refused = Standing(
                    allowed=False, used=count.used, reserved=reserved, remaining=left
                )
                return None, (refused, None)
            new = ledger.compacted(now, count.last_seq).holding_for(rid, slot, quantity)
            if hold_beside and not beside:  # one round trip for both writes
                beside.append(asyncio.ensure_future(self._hold(key, rid, quantity, slot, new_id)))
            granted = Standing(
                allowed=True,
                used=count.used,
                reserved=reserved + quantity,
                remaining=left - quantity,
                reservation_id=rid,
            )
            return new.encode(), (granted, slot)

        try:
            decision, held = await cas.update(
                self.kv,
                ledger_key(key),
                step,
                self.attempts,
                lambda: read_count(count_kv, key),
                known=None if cached is None else (cached.ledger, cached.count),
                stored=None if cached is None else cached.store,
            )
        finally:
            # Never leave the hold's write behind unawaited; its failure is raised below.
            await asyncio.gather(*beside, return_exceptions=True)
        if beside:
            beside[0].result()  # raises what the write raised: the retry finds the id
            if held is None:  # granted, lost the compare-and-set, then refused: not held
                await self.kv.delete(hold_key(key, rid))
        elif held is not None and made is None:
            await self._hold(key, rid, quantity, held, new_id)
        return decision

    async def _hold(self, key: str, rid: str, quantity: float, slot: int, new_id: bool) -> None:
        """Write reservation ``rid``'s own key: what ``release``/``consume`` take back."""
        hold = Hold(quantity=quantity, slot=slot).model_dump_json().encode()
        if new_id:
            # Nobody else knows the id, and every attempt of this call holds in one slot.
            await self.kv.put(hold_key(key, rid), hold)
        else:
            # Absent, or already written by the same id racing itself: held once either way.
            await cas.write(self.kv, hold_key(key, rid), hold, None)

    async def _again(self, count_kv: Any, key: str, limit: float, rid: str) -> Standing:
        again = await self.standing(count_kv, key, limit, 0)
        return again.model_copy(update={"allowed": True, "reservation_id": rid})

    async def release(self, count_kv: Any, key: str, reservation_id: str) -> bool:
        """Free what reservation ``reservation_id`` holds; False if it is not held."""
        return await self._settle(count_kv, key, reservation_id, None)

    async def consume(self, count_kv: Any, key: str, reservation_id: str, seq: int) -> bool:
        """The reservation was recorded as usage at stream sequence ``seq``: hold it until
        the counter has counted ``seq``, then it is usage. False if it is not held."""
        return await self._settle(count_kv, key, reservation_id, seq)

    async def settle_made(
        self, count_kv: Any, key: str, reservation_id: str, seq: int | None
    ) -> bool | None:
        """``release`` (``seq`` None) or ``consume`` made id ``reservation_id``: True if this
        call took it back, False if it was taken back before, None if it is no made id of
        ``key`` (then it may have a hold key). Only for trusted callers: the id's slot and
        quantity are believed (docs/entitlements.md, "One write per reservation")."""
        hold = made_hold(key, reservation_id)
        if hold is None:
            return None
        # The marker first, by create: of two takers (a release racing a record) one wins.
        if not await cas.write(self.kv, settled_key(key, reservation_id), b"", None):
            return False
        await self._take_back(count_kv, key, hold, seq)
        return True

    async def _settle(self, count_kv: Any, key: str, reservation_id: str, seq: int | None) -> bool:
        value = await cas.claim(self.kv, hold_key(key, reservation_id))
        if value is None:
            return False
        await self._take_back(count_kv, key, Hold.model_validate_json(value), seq)
        return True

    async def _take_back(self, count_kv: Any, key: str, hold: Hold, seq: int | None) -> None:
        """Remove ``hold`` from its slot; with ``seq``, hold it as uncounted usage instead."""

        async def step(entry: cas.Entry, count: CountView) -> tuple[bytes | None, None]:
            now = time.time()
            ledger = parse_ledger(entry.value)
            count = await _current(count, ledger, count_kv, key)
            ledger = ledger.compacted(now, count.last_seq)
            if hold.slot not in ledger.held:  # expired: it holds nothing any more
                return None, None
            held = _add(ledger.held, hold.slot, -hold.quantity)
            consumed = ledger.consumed
            if seq is not None and seq > count.last_seq:
                consumed = _add(consumed, seq, hold.quantity)
            # ``recent`` stays: a new id's retry finds itself only there.
            return ledger.replaced(held=held, consumed=consumed).encode(), None

        await cas.update(
            self.kv, ledger_key(key), step, self.attempts, lambda: read_count(count_kv, key)
        )


#: The bucket (no expiry) where the entitlements function puts the tier file it runs with,
#: and the key: in-process clients watch it for the limits.
LIMITS_BUCKET = "BILLING_LIMITS"
TIER_FILE_KEY = "tiers"


async def limits_bucket(js: Any, replicas: int = 1) -> Any:
    """The limits bucket, created if missing."""
    from nats.js.api import KeyValueConfig
    from nats.js.errors import BucketNotFoundError

    try:
        return await js.key_value(LIMITS_BUCKET)
    except BucketNotFoundError:
        config = KeyValueConfig(bucket=LIMITS_BUCKET, history=1, replicas=replicas)
        return await js.create_key_value(config)


async def publish_tier_file(js: Any, tier_file: bytes, replicas: int = 1) -> None:
    """Put the tier file (JSON) where clients watch it, unless it is there already."""
    kv = await limits_bucket(js, replicas)
    entry = await cas.read(kv, TIER_FILE_KEY)
    if entry.value != tier_file:
        await kv.put(TIER_FILE_KEY, tier_file)
