"""The CloudEvents on the STRIPE stream, and ``parse`` that turns a message into one.

Every message is a structured CloudEvent 1.0 (``application/cloudevents+json``) whose
``data`` holds ``translation`` (the typed model, or null) and ``stripe`` (the Stripe event
exactly as Stripe sent it). See docs/consumers.md.

This module is the one definition of that envelope: the bridge writes it (its
``message.py``, a string build on the hot path, tested against ``CloudEventMessage``), its
JSON Schema is generated from ``CloudEventMessage``, and consumers read it with ``parse``.

Message format 2 (this one): ``dataschema`` names the JSON Schema of ``data`` as
CloudEvents defines it, ``urn:stripe-bridge:data:<SCHEMA>`` for a translated type and
``urn:stripe-bridge:data:untranslated.v1`` for any other. Format 1 (stripe-bridge before
0.1.0's issue #18 fix) named the translation's schema, ``urn:stripe-bridge:schema:<SCHEMA>``,
and set none for untranslated types; ``parse`` reads both.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from enum import StrEnum
from typing import Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, SerializeAsAny

from .models import MODELS, SCHEMA_URN_PREFIX, Translation

#: Prefix of the CloudEvents ``type``: ``com.stripe.invoice.paid``.
TYPE_PREFIX = "com.stripe."
#: ``dataschema`` = this prefix + a data schema's name: the JSON Schema ``data`` adheres to.
DATA_SCHEMA_URN_PREFIX = "urn:stripe-bridge:data:"
#: The data schema of events without a typed translation (``translation`` is null).
UNTRANSLATED = "untranslated.v1"


def data_schema(model: type[Translation] | None) -> str:
    """The ``dataschema`` of events translated into ``model`` (None: untranslated types)."""
    return DATA_SCHEMA_URN_PREFIX + (model.SCHEMA if model is not None else UNTRANSLATED)


def translation_model(dataschema: str | None) -> type[Translation] | None:
    """The translation model a message's ``dataschema`` names, in either message format."""
    if dataschema is None:
        return None
    if dataschema.startswith(DATA_SCHEMA_URN_PREFIX):
        dataschema = SCHEMA_URN_PREFIX + dataschema.removeprefix(DATA_SCHEMA_URN_PREFIX)
    return MODELS.get(dataschema)


class CloudEventAttributes(BaseModel):
    """The CloudEvents attributes the bridge sets; attributes added later are kept."""

    # Built on first use: the bridge imports this module for its names, not these models.
    model_config = ConfigDict(frozen=True, extra="allow", defer_build=True)

    specversion: Literal["1.0"]
    id: str = Field(
        pattern=r"^evt_", description="The Stripe event id (`evt_...`), also the `Nats-Msg-Id`."
    )
    type: str = Field(
        pattern=r"^com\.stripe\.[a-z0-9_]+(\.[a-z0-9_]+)+$",
        description="`com.stripe.` + the Stripe event type.",
    )
    source: str = Field(
        pattern=r"^urn:stripe:(live|test)(:acct_\w+)?$",
        description="`urn:stripe:<live|test>` (`:<account>` for Connect).",
    )
    time: datetime = Field(description="The Stripe event's `created`.")
    datacontenttype: Literal["application/json"]
    stripelivemode: bool
    subject: str | None = Field(
        default=None, description="Id of the object the event is about (customer for summaries)."
    )
    stripeapiversion: str | None = None
    dataschema: str | None = Field(
        default=None,
        pattern=r"^urn:stripe-bridge:(data|schema):",
        description="The JSON Schema of `data`: `urn:stripe-bridge:data:<name>.v<N>` "
        "(format 1 messages: `urn:stripe-bridge:schema:<name>.v<N>`, the translation's).",
    )
    translationerror: str | None = Field(
        default=None, description="Why a registered type could not be translated."
    )

    @property
    def stripe_type(self) -> str:
        """The Stripe event type, e.g. ``invoice.paid``."""
        return self.type.removeprefix(TYPE_PREFIX)

    @property
    def translation_schema(self) -> str | None:
        """The translation's ``urn:stripe-bridge:schema:<name>.v<N>`` in either format."""
        model = translation_model(self.dataschema)
        return model.dataschema() if model is not None else None


class StripeEventJSON(BaseModel):
    """``data.stripe``: the Stripe event exactly as Stripe sent it (every field kept)."""

    model_config = ConfigDict(extra="allow", defer_build=True)

    id: str
    object: Literal["event"]
    type: str
    created: int
    livemode: bool
    data: dict[str, Any]


class EventData(BaseModel):
    """``data`` of every message: the translation (or null) and the Stripe event."""

    model_config = ConfigDict(defer_build=True)

    translation: dict[str, Any] | None = Field(
        description="The typed translation its data schema names, or null."
    )
    stripe: StripeEventJSON


class CloudEventMessage(CloudEventAttributes):
    """A message on the wire: the attributes and ``data`` (schemas/cloudevent.json)."""

    data: EventData


class StripeCloudEvent(CloudEventAttributes):
    """A parsed message: its attributes and ``stripe``, the whole Stripe event."""

    stripe: dict[str, Any] = Field(description="`data.stripe`: the Stripe event, whole.")

    @property
    def created(self) -> int:
        """The Stripe event's ``created`` (seconds since the epoch)."""
        created = self.stripe.get("created")
        return created if isinstance(created, int) else int(self.time.timestamp())


class TypedEvent(StripeCloudEvent):
    """An event with its typed translation (``isinstance`` or ``match`` on ``translation``)."""

    # SerializeAsAny: model_dump writes the concrete model's fields, not the base's none.
    translation: SerializeAsAny[Translation]


class Untranslated(StrEnum):
    """Why an event carries no typed translation."""

    #: The bridge translates no event of this type: read ``stripe`` yourself.
    NOT_TRANSLATED = "not_translated"
    #: The bridge failed to translate it (``translationerror`` says why); ``stripe`` is whole.
    TRANSLATION_FAILED = "translation_failed"
    #: A ``dataschema`` this SDK version does not know (upgrade the SDK); the translation
    #: is in ``translation_data`` as plain JSON.
    UNKNOWN_SCHEMA = "unknown_schema"


class UntranslatedEvent(StripeCloudEvent):
    """An event without a typed translation; ``reason`` says why."""

    reason: Untranslated
    translation_data: dict[str, Any] | None = None


class _HasData(Protocol):
    data: bytes


def _decode(message: bytes | str | Mapping[str, Any] | _HasData) -> dict[str, Any]:
    if isinstance(message, Mapping):
        return dict(message)
    body = message if isinstance(message, bytes | str) else message.data
    decoded = json.loads(body)
    if not isinstance(decoded, dict):
        raise ValueError("a stripe-bridge message is a JSON object (a structured CloudEvent)")
    return decoded


def parse(message: bytes | str | Mapping[str, Any] | _HasData) -> TypedEvent | UntranslatedEvent:
    """The event in ``message``: a NATS message, its body, or the decoded JSON object.

    Raises ``ValueError`` (pydantic's ``ValidationError`` is one) when the body is not a
    CloudEvent the bridge publishes.
    """
    cloudevent = _decode(message)
    data = cloudevent.pop("data", None)
    if not isinstance(data, dict) or not isinstance(data.get("stripe"), dict):
        raise ValueError("data.stripe is missing: not a stripe-bridge CloudEvent")
    attributes = {**cloudevent, "stripe": data["stripe"]}
    translation = data.get("translation")
    model = translation_model(cloudevent.get("dataschema"))
    if isinstance(translation, dict) and model is not None:
        return TypedEvent.model_validate(
            {**attributes, "translation": model.model_validate(translation)}
        )
    if isinstance(translation, dict):
        reason = Untranslated.UNKNOWN_SCHEMA
    elif cloudevent.get("translationerror"):
        reason = Untranslated.TRANSLATION_FAILED
    else:
        reason = Untranslated.NOT_TRANSLATED
    return UntranslatedEvent.model_validate(
        {**attributes, "reason": reason, "translation_data": translation}
    )
