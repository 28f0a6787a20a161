"""The Stripe event envelope: the boundary model every webhook body must satisfy.

Bodies are parsed as strictly as Stripe writes them (RFC 8259 JSON in UTF-8, finite
numbers, shallow nesting) and validated without coercion, so the published CloudEvent is
strict JSON and says exactly what the signed body said.
"""

from __future__ import annotations

import json
import math
from typing import Annotated, Any, Literal

import msgspec
from pydantic import BaseModel, ConfigDict, Field, PlainValidator

#: Stripe API versions from this date on moved subscription periods onto items and
#: invoice -> subscription links under ``parent`` (the "basil" release).
BASIL_API_VERSION = "2025-03-31"

#: Deepest nesting accepted. Stripe's objects nest about ten levels (expanded objects
#: included); deep enough bodies exhaust Python's recursion in parsing or serialising.
MAX_DEPTH = 64


class MalformedBody(ValueError):
    """The body is not the strict JSON Stripe sends; the message is safe to log."""


class AmbiguousBody(MalformedBody):
    """JSON whose meaning depends on the parser: a duplicate key, an unpaired surrogate.

    RFC 8259 leaves both to the implementation (sections 4 and 8.2): stored as signed, a
    consumer's parser could read another event (another ``id``) than the bridge did.
    """


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        raise AmbiguousBody("duplicate key in an object")
    return obj


def _no_constant(token: str) -> float:
    raise MalformedBody(f"{token} is not JSON")


def _finite(token: str) -> float:
    value = float(token)
    if not math.isfinite(value):
        raise MalformedBody("number out of range")
    return value


#: msgspec's C decoder: RFC 8259 only (no NaN/Infinity), refuses numbers that overflow a
#: float (1e400), invalid UTF-8 and lone surrogate escapes, keeps big integers exact. It
#: keeps the last of duplicate keys silently: ``parse_body`` checks for those itself.
_decode = msgspec.json.Decoder().decode
_encode = msgspec.json.Encoder().encode


def parse_body(body: bytes) -> Any:
    """``body`` as JSON, or MalformedBody: UTF-8 only (no BOM), no NaN/Infinity, finite
    numbers, at most MAX_DEPTH levels of nesting; AmbiguousBody for a duplicate key in an
    object or an unpaired surrogate escape.

    One C parse for the bodies Stripe sends; whatever it refuses, and a body it cannot
    prove free of duplicate keys, goes through ``parse_body_strictly``, which says why.
    """
    try:
        value = _decode(body)
    except (msgspec.DecodeError, RecursionError, ValueError):
        # ValueError: an integer over Python's 4300-digit conversion limit.
        return parse_body_strictly(body)
    # Nesting needs a bracket per level: a body with few needs no walk (Stripe's have ~30).
    if body.count(b"{") + body.count(b"[") > MAX_DEPTH and _depth_over(value, MAX_DEPTH):
        raise MalformedBody(f"nested deeper than {MAX_DEPTH} levels")
    if b"\\u003" in body or body.count(b":") != _encode(value).count(b":"):
        # Duplicate keys: each source pair has one ':' outside strings, and every ':'
        # inside a string is one byte in the body and in the re-encoded value (which writes
        # ':' unescaped); a duplicate's dropped pair takes at least its ':' with it. So the
        # counts differ exactly when a key was repeated, unless an escape (\u003a) wrote a
        # ':' the body lacks: such bodies are parsed strictly.
        return parse_body_strictly(body)
    return value


def parse_body_strictly(body: bytes) -> Any:
    """``parse_body`` through the standard library, each rule checked on its own (slower).

    What ``parse_body`` falls back on, and what tells its refusals apart.
    """
    try:
        text = body.decode("utf-8")
        # json.loads(bytes) would also take UTF-16/32; a BOM fails here as invalid JSON.
        value = json.loads(
            text, parse_constant=_no_constant, parse_float=_finite, object_pairs_hook=_unique_keys
        )
    except UnicodeDecodeError:
        raise MalformedBody("body is not UTF-8") from None
    except json.JSONDecodeError as exc:
        raise MalformedBody(f"body is not JSON: {exc.msg}") from None
    except MalformedBody:  # from the hooks: a duplicate key, a constant, an infinity
        raise
    except ValueError:
        # int() refuses integers over 4300 digits (CPython's conversion limit): it escaped
        # as an unhandled error, a 500 instead of the 400 every other bad number gets.
        raise MalformedBody("number out of range") from None
    except RecursionError:
        raise MalformedBody(f"nested deeper than {MAX_DEPTH} levels") from None
    if _depth_over(value, MAX_DEPTH):
        raise MalformedBody(f"nested deeper than {MAX_DEPTH} levels")
    # Valid UTF-8 holds no surrogates, so only a \uD800-\uDFFF escape can make one (a
    # paired escape decodes to one character).
    if b"\\u" in body and _has_lone_surrogate(value):
        raise AmbiguousBody("unpaired surrogate escape in a string")
    return value


def _has_lone_surrogate(value: Any) -> bool:
    pending = [value]
    while pending:
        node = pending.pop()
        if type(node) is dict:
            pending.extend(node.keys())
            pending.extend(node.values())
        elif type(node) is list:
            pending.extend(node)
        elif type(node) is str:
            try:
                node.encode("utf-8")
            except UnicodeEncodeError:
                return True
    return False


def _depth_over(value: Any, limit: int) -> bool:
    # Level by level, iteratively: a recursive walk would fail on exactly the bodies it must
    # refuse, and this visits each container once without a tuple per child (hot path).
    level = [value] if isinstance(value, dict | list) else []
    depth = 0
    while level:
        depth += 1
        if depth > limit:
            return True
        below = []
        for node in level:
            for child in node.values() if type(node) is dict else node:
                if type(child) is dict or type(child) is list:
                    below.append(child)
        level = below
    return False


def _json_object(value: Any) -> dict[str, Any]:
    # A parsed JSON object's keys are strings already: checked, not copied key by key as
    # ``dict[str, Any]`` would (~3 us of a webhook for an invoice's ~70 fields).
    if type(value) is not dict:
        raise ValueError("Input should be a valid dictionary")
    return value


#: A JSON object, taken as it is (the body's parse made it; nothing here coerces).
JsonObject = Annotated[dict[str, Any], PlainValidator(_json_object)]


class StripeEventData(BaseModel):
    """``event.data``: the object as it is now, and what changed for ``*.updated``."""

    model_config = ConfigDict(extra="allow", strict=True)

    object: JsonObject
    previous_attributes: JsonObject | None = None


class StripeEvent(BaseModel):
    """A Stripe webhook event (``"object": "event"``); unknown fields are kept.

    Strict: ``"livemode": "false"`` or ``"created": true`` are refused, not coerced.
    """

    model_config = ConfigDict(extra="allow", strict=True)

    id: str = Field(pattern=r"^evt_[A-Za-z0-9_]+$", max_length=255)
    object: Literal["event"]
    type: str = Field(pattern=r"^[a-z0-9_]+(\.[a-z0-9_]+)+$", max_length=200)
    # Up to year 9999: a later ``created`` is no Stripe event and cannot become a timestamp.
    created: int = Field(ge=0, le=253402300799)
    livemode: bool
    api_version: str | None = None
    account: str | None = None
    data: StripeEventData

    @property
    def mode(self) -> Literal["live", "test"]:
        """``live`` or ``test``: the second token of the NATS subject."""
        return "live" if self.livemode else "test"

    @property
    def is_basil_or_newer(self) -> bool:
        """Whether the payload uses the 2025-03-31.basil (or newer) object shapes."""
        return (self.api_version or "") >= BASIL_API_VERSION

    @property
    def primary_object_id(self) -> str | None:
        """The id of the object the event is about (customer for entitlement summaries)."""
        obj = self.data.object
        object_id = obj.get("id")
        if isinstance(object_id, str):
            return object_id
        customer = obj.get("customer")
        return customer if isinstance(customer, str) else None
